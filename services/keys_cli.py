"""`autofix-ml keys`: make, list and revoke the gateway's API keys (in DATABASE_URL).

Use: `autofix-ml keys create --role operator --name remediation-bot` prints the key once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.access import ROLES, is_loopback
from shared.apikeys import ApiKey, create_key, list_keys, revoke_key
from shared.db import create_engine
from shared.errors import AppError
from shared.settings import Settings, get_settings

keys_app = typer.Typer(
    help="API keys of the gateway (README, Access control).", no_args_is_help=True
)
console = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(get_settings().database_url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(2) from exc


def _row(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@keys_app.command("create")
def create(
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Make a key and print it on stdout: it is shown this once, only its hash is stored."""
    if role not in ROLES:
        raise typer.BadParameter(f"{role!r}; choose one of {', '.join(ROLES)}", param_hint="--role")
    key, record = _run(lambda conn: create_key(conn, role=role, name=name))
    console.print(
        f"API key {record.id} ({record.role}{', ' + record.name if record.name else ''}) "
        "made; it is shown once, keep it now:"
    )
    typer.echo(key)


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every key (never the key itself): id, name, role, first characters, made, revoked."""
    keys = _run(list_keys)
    if as_json:
        for key in keys:
            typer.echo(json.dumps(_row(key)))
        return
    if not keys:
        console.print("no API key yet: `autofix-ml keys create --role admin`")
        return
    typer.echo(f"{'id':>4}  {'role':<8}  {'prefix':<15}  {'created':<25}  {'revoked':<25}  name")
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        created = key.created_at.isoformat(timespec="seconds")
        typer.echo(
            f"{key.id:>4}  {key.role:<8}  {key.prefix + '...':<15}  {created:<25}  "
            f"{revoked:<25}  {key.name}"
        )


@keys_app.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="The key's id (`keys list`).")]) -> None:
    """Revoke a key: the gateway refuses it within AUTOFIX_AUTH_CACHE_SECONDS."""
    record = _run(lambda conn: revoke_key(conn, key_id))
    assert record.revoked_at is not None
    console.print(f"API key {record.id} ({record.role}) revoked at {record.revoked_at.isoformat()}")


def access_summary(settings: Settings) -> str:
    """One line for `autofix-ml up`: whether the gateway will want keys."""
    if settings.auth == "off":
        return "off (AUTOFIX_AUTH=off): anyone on loopback may call every route"
    keys = _run(list_keys)
    active = sum(1 for key in keys if key.revoked_at is None)
    if keys or settings.auth == "on" or not is_loopback(settings.bind_host):
        return f"required on every /api/ml route ({active} active; `autofix-ml keys list`)"
    return (
        "none yet: the gateway is open on loopback; `autofix-ml keys create --role admin` "
        "turns keys on"
    )


def preflight(settings: Settings, service: str) -> str | None:
    """Why `service` must not start with these settings (the message to print), or None."""
    from shared.web import ConfigurationError, internal_token_required

    if service != "api":
        try:
            internal_token_required(settings, service=service)
        except ConfigurationError as exc:
            return str(exc)
        return None
    loopback = is_loopback(settings.bind_host)
    if settings.auth == "off":
        if loopback:
            return None
        return f"AUTOFIX_AUTH=off with AUTOFIX_BIND_HOST={settings.bind_host}: keys can be off only on loopback"
    if settings.auth == "auto" and loopback:
        return None
    try:
        active = sum(1 for key in _run(list_keys) if key.revoked_at is None)
    except Exception:  # the database may come later: the gateway waits for it, closed
        return None
    if active:
        return None
    where = (
        "AUTOFIX_AUTH=on"
        if settings.auth == "on"
        else (f"the gateway listens beyond loopback (AUTOFIX_BIND_HOST={settings.bind_host})")
    )
    return f"{where} and no API key exists: create one with `autofix-ml keys create --role admin`"
