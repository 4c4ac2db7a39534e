"""The gateway's API keys: read from the database, held in memory, reloaded every few seconds.

Use: `store = KeyStore(settings)`; `await store.start()` in the lifespan (refuses a gateway that
listens beyond loopback without a key), `await store.find(key)` per request, `await
store.stop()` on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.access import is_loopback, key_hash, same_hash
from shared.apikeys import ApiKey, key_table
from shared.db import create_engine
from shared.settings import Settings
from shared.web import ConfigurationError

log = logging.getLogger("autofix_ml.gateway.access")
# An unknown key reloads the keys at most this often: a key made a moment ago works at once
# (a miss waits for the rest of this window, then reads), a flood of wrong keys costs ten
# small queries a second and each wrong key waits at most this long.
MISS_RELOAD_SECONDS = 0.1
NO_KEY_HELP = "create one with `autofix-ml keys create --role admin` (README, Access control)"


class KeyStore:
    """The active keys by sha256, and whether keys are required at all."""

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.mode = settings.auth
        self.loopback = is_loopback(settings.bind_host)
        self._engine = engine
        self._own_engine = engine is None
        self._keys: dict[str, ApiKey] = {}
        self._made = 0  # keys ever made, revoked ones included
        self.loaded = False
        self._loaded_at = -float("inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def required(self) -> bool:
        """Keys are needed: `on`; beyond loopback; or `auto` once any key was ever made (or
        while the keys could not be read: closed, not open, by default)."""
        if self.mode == "off":
            return False
        if self.mode == "on" or not self.loopback:
            return True
        return not self.loaded or self._made > 0

    @property
    def active(self) -> int:
        return len(self._keys)

    @property
    def engine(self) -> AsyncEngine | None:
        """The keys' database engine (None until started, or with keys off)."""
        return self._engine

    async def start(self) -> None:
        if self.mode == "off":
            if not self.loopback:
                raise ConfigurationError(
                    f"AUTOFIX_AUTH=off with AUTOFIX_BIND_HOST={self.settings.bind_host}: API keys "
                    "can be off only on a loopback bind"
                )
            log.warning("AUTOFIX_AUTH=off: the gateway answers anyone on loopback without a key")
            return
        if self._engine is None:
            self._engine = create_engine(self.settings.database_url)
        try:
            await self.reload()
        except Exception as exc:  # the database may come later; closed until it does
            log.error("API keys unreadable (%s): keyed routes answer 503 until they are", exc)
        if self.loaded and self.active == 0 and (self.mode == "on" or not self.loopback):
            where = (
                "AUTOFIX_AUTH=on"
                if self.mode == "on"
                else (
                    f"the gateway listens beyond loopback (AUTOFIX_BIND_HOST={self.settings.bind_host})"
                )
            )
            await self.stop()
            raise ConfigurationError(f"{where} and no API key exists: {NO_KEY_HELP}")
        self._log_mode()
        self._task = asyncio.create_task(self._reload_loop(), name="api-key-reload")

    def _log_mode(self) -> None:
        if self.required:
            log.info("API keys required on every /api/ml route (%d active)", self.active)
        else:
            log.warning(
                "no API key exists: the gateway is open to any caller on loopback; %s "
                "to require keys",
                NO_KEY_HELP,
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._engine is not None and self._own_engine:
            await self._engine.dispose()
            self._engine = None

    async def reload(self, *, older_than: float = 0.0) -> None:
        """Read the keys again (unless the last read is younger than `older_than` seconds)."""
        assert self._engine is not None
        async with self._lock:
            if time.monotonic() - self._loaded_at < older_than:
                return
            async with self._engine.connect() as conn:
                keys, made = await key_table(conn)
            was_required = self.required
            self._keys, self._made = keys, made
            self.loaded, self._loaded_at = True, time.monotonic()
            if self.required != was_required:
                self._log_mode()

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.auth_cache_seconds)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("API keys not reloaded (%s); the last read stays in use", exc)

    def lookup(self, key: str) -> ApiKey | None:
        """The active key, from memory only."""
        digest = key_hash(key)
        found = self._keys.get(digest)
        if found is not None and same_hash(found.key_hash, digest):
            return found
        return None

    async def find(self, key: str) -> ApiKey | None:
        """The active key; an unknown one reloads the keys first (at most every
        ``MISS_RELOAD_SECONDS``: a miss sooner after the last read waits for the rest of that
        window, so a key made just after a read works at once, not after the next read)."""
        found = self.lookup(key)
        if found is not None or self._engine is None:
            return found
        wait = MISS_RELOAD_SECONDS - (time.monotonic() - self._loaded_at)
        if wait > 0:
            await asyncio.sleep(wait)
        with contextlib.suppress(Exception):
            await self.reload(older_than=MISS_RELOAD_SECONDS)
        return self.lookup(key)
