"""End to end: API keys made with the CLI, `autofix-ml up` with its internal token."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import CLI, service_env, wait_for

pytestmark = pytest.mark.e2e


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_keys_are_made_listed_and_revoked_and_never_shown_again(
    database_url: str, engine: object
) -> None:
    env = service_env(database_url)
    made = cli(env, "keys", "create", "--role", "operator", "--name", "bot")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("afx_") and len(key) > 40
    assert "shown once" in made.stderr
    listed = cli(env, "keys", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["role"], r["name"], r["revoked_at"]) for r in rows] == [("operator", "bot", None)]
    assert key not in listed.stdout and rows[0]["prefix"] == key[:12]
    revoked = cli(env, "keys", "revoke", str(rows[0]["id"]))
    assert revoked.returncode == 0
    again = [json.loads(line) for line in cli(env, "keys", "list", "--json").stdout.splitlines()]
    assert again[0]["revoked_at"] is not None
    bad_role = cli(env, "keys", "create", "--role", "root")
    assert bad_role.returncode != 0 and "reader, operator, admin" in bad_role.stderr
    missing = cli(env, "keys", "revoke", "999")
    assert missing.returncode == 2 and "no API key with id 999" in missing.stderr


def test_up_with_a_key_guards_the_gateway_and_the_services(
    database_url: str, engine: object, tmp_path: Path
) -> None:
    env = service_env(database_url)
    key = cli(env, "keys", "create", "--role", "reader").stdout.strip()
    proc = subprocess.Popen([*CLI, "up"], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    gateway = f"http://127.0.0.1:{env['AUTOFIX_API_PORT']}"
    trainer = f"http://127.0.0.1:{env['AUTOFIX_TRAINER_PORT']}"
    try:
        wait_for(f"{gateway}/api/ml/health")
        anonymous = httpx.get(f"{gateway}/api/ml/models")
        keyed = httpx.get(f"{gateway}/api/ml/models", headers={"Authorization": f"Bearer {key}"})
        direct = httpx.get(f"{trainer}/models")
        direct_health = httpx.get(f"{trainer}/health")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert anonymous.status_code == 401
    assert keyed.status_code == 200
    assert direct.status_code == 401  # the token made by `up` is not ours
    assert direct_health.status_code == 200
    assert "required on every /api/ml route (1 active" in stderr.decode()


def test_a_gateway_beyond_loopback_without_a_key_refuses_to_start(
    database_url: str, engine: object
) -> None:
    env = service_env(database_url, AUTOFIX_BIND_HOST="0.0.0.0")
    refused = cli(env, "serve", "api")
    assert refused.returncode == 2
    assert "no API key exists" in refused.stderr and "keys create" in refused.stderr
    service = cli(env, "serve", "trainer")
    assert service.returncode == 2 and "AUTOFIX_INTERNAL_TOKEN" in service.stderr
    # `up` refuses before starting anything, rather than restarting the gateway forever.
    upped = cli(env, "up")
    assert upped.returncode == 2 and "no API key exists" in upped.stderr
