"""The `autofix-ml` command: run the services, migrate, generate synthetic data."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.keys_cli import access_summary, keys_app, preflight
from shared.logs import configure_logging
from shared.settings import get_settings

app = typer.Typer(
    help="autofix-ml: the ML layer of an auto-remediation system.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)

SERVICES = ("collector", "trainer", "forecaster", "api")
APP_FACTORIES = {
    "collector": "services.collector.app:create_app",
    "trainer": "services.trainer.app:create_app",
    "forecaster": "services.forecaster.app:create_app",
    "api": "services.api.app:create_app",
}


def _freeze_imports(factory: str) -> None:
    """Import the service's code and libraries, then move every object they made out of the
    cyclic garbage collector's way (``gc.freeze``): its full passes otherwise walk a million
    objects of numpy, pandas, scikit-learn and the rest, stalling the event loop 150-190 ms
    several times a minute under load (bench/RESULTS.md, issue 9); frozen, 20-40 ms."""
    importlib.import_module(factory.partition(":")[0])
    gc.collect()
    gc.freeze()


def _configure_logging() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    for noisy in ("httpx", "httpcore", "cmdstanpy", "prophet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database at DATABASE_URL to the newest schema."""
    from shared.migrate import upgrade

    url = get_settings().database_url
    upgrade(url, revision)
    console.print(f"database migrated to {revision}")


@db_app.command("sql")
def db_sql() -> None:
    """Print the schema as PostgreSQL DDL (for `psql < add_ml_tables.sql`)."""
    from shared.migrate import postgresql_ddl

    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.stdout.write(postgresql_ddl())


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="collector, trainer, forecaster or api")],
    migrate: Annotated[bool, typer.Option(help="Migrate the database first.")] = False,
) -> None:
    """Run one service in the foreground (what a container runs)."""
    if service not in APP_FACTORIES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose one of {', '.join(SERVICES)}"
        )
    import uvicorn

    settings = get_settings()
    _configure_logging()
    if migrate:
        from shared.migrate import upgrade

        upgrade(settings.database_url)
    problem = preflight(settings, service)
    if problem is not None:
        console.print(f"[red]{service} not started:[/red] {problem}")
        raise typer.Exit(2)
    _freeze_imports(APP_FACTORIES[service])
    uvicorn.run(
        APP_FACTORIES[service],
        factory=True,
        host=settings.bind_host,
        port=settings.port(service),
        log_level=settings.log_level,
        # json: uvicorn's own records go through the root handler, one format for all.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def up() -> None:
    """Migrate, then run all four services until Ctrl-C or SIGTERM, restarting any that crashes."""
    from shared.migrate import upgrade
    from shared.supervisor import Supervisor, die_with_parent

    settings = get_settings()
    _configure_logging()
    upgrade(settings.database_url)
    stopping = False

    def stop(_signum: int = 0, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The gateway's own refusal (no key beyond loopback) stops `up` before anything starts,
    # rather than being restarted by the supervisor again and again.
    problem = preflight(settings, "api")
    if problem is not None:
        console.print(f"[red]api not started:[/red] {problem}")
        raise typer.Exit(2)
    env = os.environ.copy()
    if not settings.internal_token:
        # One token per run, shared by the gateway and the services it alone may call.
        env["AUTOFIX_INTERNAL_TOKEN"] = secrets.token_urlsafe(32)
    # Started by a shell or a test that is killed: go with it (the services follow us).
    die_with_parent(signal.SIGTERM)
    log = logging.getLogger("autofix_ml.supervisor")

    def report(line: str) -> None:
        log.warning(line)

    supervisor = Supervisor(
        {name: [sys.executable, "-m", "services.cli", "serve", name] for name in SERVICES},
        env=env,
        report=report,
    )
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
    for name in SERVICES:
        console.print(f"{name:<11} http://{host}:{settings.port(name)}")
    console.print(f"API docs    http://{host}:{settings.api_port}/api/docs")
    console.print(f"database    {settings.database_url}")
    console.print(f"API keys    {access_summary(settings)}")
    console.print("a service that crashes is restarted (0.5 s, 1 s, 2 s ... 30 s apart)")
    supervisor.run(lambda: stopping)
    console.print("all services stopped")


@app.command()
def synthetic(
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of 1-minute samples.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    output: Annotated[Path | None, typer.Option(help="Write a CSV file here.")] = None,
    database: Annotated[bool, typer.Option(help="Store in DATABASE_URL.")] = False,
    host: Annotated[str, typer.Option(help="Host name stored with the samples.")] = "synthetic",
) -> None:
    """Generate labelled synthetic training data to a CSV file and/or the database."""
    if output is None and not database:
        raise typer.BadParameter("give --output FILE and/or --database")
    from services.trainer.synthetic.generator import SyntheticDataGenerator, label_distribution
    from services.trainer.synthetic.service import save_to_database

    generator = SyntheticDataGenerator(seed=seed)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("generating", total=1)
        frame = generator.generate_full_training_set(days)
        progress.update(task, completed=1)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            chunk = 10_000
            task = progress.add_task(f"writing {output}", total=len(frame))
            out_frame = frame.assign(host=host)
            for start in range(0, len(frame), chunk):
                part = out_frame.iloc[start : start + chunk]
                part.to_csv(
                    output,
                    mode="w" if start == 0 else "a",
                    header=start == 0,
                    index=False,
                    date_format="%Y-%m-%dT%H:%M:%S+00:00",
                )
                progress.update(task, advance=len(part))
        if database:
            task = progress.add_task("storing in the database", total=1)
            save_to_database(frame, host=host)
            progress.update(task, completed=1)
    console.print(f"{len(frame)} samples: {label_distribution(frame)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
