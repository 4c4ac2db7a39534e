"""API keys and roles without a database: making a key, hashing it, ranking roles.

Use: `key = new_key()` (shown once), `key_hash(key)` (what is stored),
`allows("operator", needed="reader")`. The table and its SQL are in shared/apikeys.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Literal, get_args

Role = Literal["reader", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
# Each role may do what the roles before it may.
RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
KEY_PREFIX = "afx_"
SHOWN_PREFIX = 12  # characters of a key kept in clear, to tell keys apart in `keys list`


def new_key() -> str:
    """A key with 256 bits of randomness: `afx_` and 43 URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The sha256 of a key, hex: a high-entropy key needs no salt or slow hash."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return secrets.compare_digest(a.encode(), b.encode())


def allows(role: str, *, needed: str) -> bool:
    """Whether `role` may call a route that needs `needed`."""
    return RANK.get(role, -1) >= RANK[needed]


def is_loopback(host: str) -> bool:
    """Whether a bind address listens on loopback only (`127.0.0.1`, `::1`, `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
