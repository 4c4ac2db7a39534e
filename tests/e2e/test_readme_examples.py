"""The README's curl examples, run as written, in order, on a fresh stack after the quick start.

Convention (README.md): every fenced ``sh``/``bash`` block that runs ``curl`` is an example.
Each runs, in the README's order, in one bash session (so ``$KEY`` from the quick start and
the ids the examples keep in shell variables carry over), unless an HTML comment on the line
before it says otherwise:

- ``<!-- readme-test: skip (reason) -->``: not run (e.g. it needs Docker); the reason is required.
- ``<!-- readme-test: wait until JQ (reason) -->``: the block's first line (a GET) is first
  repeated until its answer satisfies the jq condition ``JQ`` (what a background loop
  writes), then the block runs once.

The only changes made to the text are the ports (the stack listens on free ones) and the
background loops' intervals (``ML_SCORING_INTERVAL``, ``ML_FAILURE_SCORING_INTERVAL``), so
the waits are short. Every curl call must answer 2xx with a body worth reading: JSON that
is not empty, with a positive ``count`` and non-empty lists (but those in MAY_BE_EMPTY).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.api.app import create_app
from shared.settings import Settings
from tests.conftest import IN_CI
from tests.e2e.test_cli import CLI, service_env, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(?P<text>.*?)\s*-->\s*$")
WAIT = re.compile(r"wait until (?P<cond>.+?) \((?P<reason>.+)\)$")
SKIP = re.compile(r"skip \((?P<reason>.+)\)$")
# `curl` where a command starts: line start, after `$(`, a pipe or `;`.
CURL = re.compile(r"(?:^|\$\(|\||;)\s*curl\s", re.M)
PORTS = re.compile(r"\b(127\.0\.0\.1|localhost):(5000|8001|8002|8003)\b")
# Lists an answer may hold empty, and why.
MAY_BE_EMPTY = {
    "problems": "nothing wrong",
    "alerts": "no breach predicted ahead: the forecasts carry the answer",
    "change_points": "a trend may have none",
    "filled_metrics": "a prediction may name every metric",
    "missing_metrics": "a prediction may name every metric",
}
WAIT_SECONDS = 90
# What the README says some answers show, beyond not being empty: (method, a regex on the
# path and query, the claim, a check of the JSON answer). Each must match a call.
CLAIMS: list[tuple[str, str, str, Callable[[Any], bool]]] = [
    (
        "POST",
        r"/train/anomaly-detector$",
        "a trained version in the registry",
        lambda a: a["model"]["name"] == "anomaly_detector" and a["model"]["id"] > 0,
    ),
    (
        "GET",
        r"/incidents\?status=open&type=ML_ANOMALY&host=web-1",
        "the spike opened an ML_ANOMALY incident of web-1",
        lambda a: (
            {(i["type"], i["host"], i["status"]) for i in a["incidents"]}
            == {("ML_ANOMALY", "web-1", "open")}
        ),
    ),
    (
        "POST",
        r"/incidents/\d+/resolve$",
        "resolved by hand",
        lambda a: a["status"] == "resolved",
    ),
    (
        "GET",
        r"/incidents/\d+/analysis$",
        "the incident's analysis",
        lambda a: bool(a["summary"]) and a["provider"] == "rules",
    ),
    (
        "POST",
        r"/models/\d+/activate$",
        "rolled back to an older version of synthetic's detector",
        lambda a: (
            a["model"]["status"] == "active"
            and a["model"]["host"] == "synthetic"
            and a["previous_model_id"] not in (None, a["model"]["id"])
        ),
    ),
    (
        "POST",
        r"/predict/anomaly$",
        "a score; flagged when synthetic's forest scores it (the example without a host)",
        lambda a: 0 <= a["score"] <= 1 and (a["host"] != "synthetic" or a["is_anomaly"]),
    ),
    (
        "POST",
        r"/anomaly-scores/\d+/feedback$",
        "feedback on a web-1 score",
        lambda a: a["host"] == "web-1" and a["feedback"] == "false_positive",
    ),
    (
        "GET",
        r"/anomaly-thresholds\?host=web-1",
        "the feedback gave web-1 its own threshold",
        lambda a: [t["host"] for t in a["thresholds"]] == ["web-1"],
    ),
    (
        "GET",
        r"/failure-predictions\?host=synthetic",
        "the loop's predictions of synthetic",
        lambda a: {p["host"] for p in a["predictions"]} == {"synthetic"},
    ),
]


@dataclass
class Block:
    """One fenced example of the README."""

    index: int
    line: int
    body: str
    skip: str | None = None
    wait: str | None = None

    @property
    def curls(self) -> int:
        return len(CURL.findall(self.body))


def examples(text: str) -> list[Block]:
    """Every shell block of the README that runs curl, with its directive."""
    blocks: list[Block] = []
    for m in FENCE.finditer(text):
        if m["lang"] not in ("sh", "bash", "shell") or not CURL.search(m["body"]):
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        block = Block(len(blocks), text[: m.start()].count("\n") + 1, m["body"])
        if directive := DIRECTIVE.search(before):
            said = directive["text"]
            if skip := SKIP.fullmatch(said):
                block.skip = skip["reason"]
            elif wait := WAIT.fullmatch(said):
                block.wait = wait["cond"]
            else:
                raise AssertionError(f"README line {block.line}: unknown directive {said!r}")
        blocks.append(block)
    return blocks


def test_the_readme_marks_its_examples() -> None:
    """The convention holds: examples exist, every exemption gives a reason, a wait polls a GET."""
    blocks = examples(README.read_text())
    assert len(blocks) >= 15
    assert sum(b.curls for b in blocks if b.skip is None) >= 50
    for b in blocks:
        assert b.skip is None or len(b.skip) > 5, b.line
        if b.wait is not None:
            first = b.body.splitlines()[0]
            assert first.startswith("curl ") and " -X " not in first, b.line
        # A block that starts the services would run until the test's time limit: it must
        # be exempt (the test has its own stack).
        assert b.skip is not None or not re.search(r"autofix-ml (up|serve)\b", b.body), b.line
    # Nothing else in the README looks like a directive that the parser would miss.
    marked = len(re.findall(r"^<!--\s*readme-test:", README.read_text(), re.M))
    assert marked == sum(b.skip is not None or b.wait is not None for b in blocks)


PRELUDE = r"""
set -euo pipefail
echo 0 > "$__DIR/n"
curl() {
  local n
  n=$(( $(cat "$__DIR/n") + 1 ))
  echo "$n" > "$__DIR/n"
  echo "$__BLOCK" > "$__DIR/$n.block"
  printf '%s\0' "$@" > "$__DIR/$n.args"
  local began=$EPOCHREALTIME
  command curl -D "$__DIR/$n.headers" "$@" | tee "$__DIR/$n.out"
  echo "$began $EPOCHREALTIME" > "$__DIR/$n.time"
}
__wait() {
  local cond=$1; shift
  local deadline=$((SECONDS + __WAIT_SECONDS))
  until command curl -s "$@" | jq -e "$cond" > /dev/null 2>&1; do
    if (( SECONDS > deadline )); then
      echo "README block $__BLOCK: waited ${__WAIT_SECONDS}s for $cond" >&2
      return 1
    fi
    sleep 0.5
  done
}
"""


def script(blocks: list[Block], ports: dict[str, str]) -> str:
    """One bash script: the prelude, then every example block not skipped, in order."""

    def port(m: re.Match[str]) -> str:
        return f"{m[1]}:{ports[m[2]]}"

    parts = [PRELUDE]
    for b in blocks:
        if b.skip is not None:
            continue
        body = PORTS.sub(port, b.body)
        parts.append(f"\n# README block {b.index}, line {b.line}\n__BLOCK={b.index}\n")
        if b.wait is not None:
            first = body.splitlines()[0].removeprefix("curl")
            parts.append(f"__wait {shlex_quote(b.wait)}{first}\n")
        parts.append(body)
    return "".join(parts)


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@dataclass
class Call:
    """One curl call an example made, as recorded by the wrapper."""

    number: int
    block: int
    args: list[str]
    status: int
    content_type: str
    out: str
    seconds: float

    @property
    def method(self) -> str:
        for flag, value in zip(self.args, self.args[1:], strict=False):
            if flag in ("-X", "--request"):
                return value
        return "POST" if any(a in ("-d", "--data") for a in self.args) else "GET"

    @property
    def url(self) -> str:
        return next(a for a in self.args if re.match(r"(https?://)?(127\.0\.0\.1|localhost):", a))

    @property
    def path(self) -> str:
        url = self.url if "://" in self.url else f"http://{self.url}"
        return urlsplit(url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url if "://" in self.url else f"http://{self.url}").query

    @property
    def output_file(self) -> str | None:
        for flag, value in zip(self.args, self.args[1:], strict=False):
            if flag in ("-o", "--output"):
                return value
        return None

    def __str__(self) -> str:
        return f"call {self.number} (README block {self.block}): {self.method} {self.url}"


def recorded(folder: Path) -> list[Call]:
    calls = []
    for n in range(1, int((folder / "n").read_text()) + 1):
        dumped = folder / f"{n}.headers"  # absent when curl could not connect
        headers = dumped.read_text(errors="replace") if dumped.exists() else ""
        statuses = re.findall(r"^HTTP/\S+ (\d{3})", headers, re.M)
        content_type = re.findall(r"^content-type:\s*(\S+)", headers, re.M | re.I)
        timed = folder / f"{n}.time"  # absent when the call ended the script
        began, end = timed.read_text().split() if timed.exists() else ("0", "0")
        calls.append(
            Call(
                number=n,
                block=int((folder / f"{n}.block").read_text()),
                args=(folder / f"{n}.args").read_text().split("\0")[:-1],
                status=int(statuses[-1]) if statuses else 0,
                content_type=content_type[-1] if content_type else "",
                out=(folder / f"{n}.out").read_text(errors="replace"),
                seconds=float(end) - float(began),
            )
        )
    return calls


def empty_parts(value: Any) -> list[str]:
    """Where a JSON answer is empty: itself, a zero count, an empty list (bar MAY_BE_EMPTY)."""
    if value in ({}, [], None, ""):
        return ["the answer"]
    found: list[str] = []
    if isinstance(value, dict):
        empty = {k for k, v in value.items() if isinstance(v, list) and not v}
        found.extend(sorted(empty - MAY_BE_EMPTY.keys()))
        # A zero count is empty unless it counts a list that may be (e.g. no breach ahead).
        if value.get("count") == 0 and not empty & MAY_BE_EMPTY.keys():
            found.append("count")
    return found


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`autofix-ml up` on free ports with a fresh SQLite file, as after `make up`."""
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"CI=true and no {tool}: .ci/run installs it")
            pytest.skip(f"{tool} is not installed")
    env = service_env(
        f"sqlite+aiosqlite:///{tmp_path / 'autofix-ml.db'}",
        ML_COLLECTION_INTERVAL="60",
        ML_SCORING_INTERVAL="1",
        ML_FAILURE_SCORING_INTERVAL="2",
        AUTOFIX_HOST="readme-host",
    )
    proc = subprocess.Popen([*CLI, "up"], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        wait_for(f"http://127.0.0.1:{env['AUTOFIX_API_PORT']}/api/ml/health", timeout=120)
        print(f"\nthe stack is up in {time.monotonic() - started:.1f} s")
        yield env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_every_readme_example_answers_as_written(stack: dict[str, str], tmp_path: Path) -> None:
    blocks = examples(README.read_text())
    run = [b for b in blocks if b.skip is None]
    ports = {
        "5000": stack["AUTOFIX_API_PORT"],
        "8001": stack["AUTOFIX_COLLECTOR_PORT"],
        "8002": stack["AUTOFIX_TRAINER_PORT"],
        "8003": stack["AUTOFIX_FORECASTER_PORT"],
    }
    work = tmp_path / "work"  # the reader's checkout: `.venv/bin/autofix-ml` works from it
    work.mkdir()
    (work / ".venv").symlink_to(sys.prefix)
    record = tmp_path / "calls"
    record.mkdir()
    env = {
        **stack,
        "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{stack['PATH']}",
        "__DIR": str(record),
        "__WAIT_SECONDS": str(WAIT_SECONDS),
    }
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", script(blocks, ports)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - started
    calls = recorded(record)
    last = calls[-1] if calls else None
    assert done.returncode == 0, (
        f"the examples stopped (exit {done.returncode}) after {last}:\n{done.stderr[-3000:]}"
    )

    # Every example block ran every one of its curl commands.
    by_block = {b.index: [c for c in calls if c.block == b.index] for b in run}
    assert {b.line: len(by_block[b.index]) for b in run} == {b.line: b.curls for b in run}

    problems: list[str] = []
    for call in calls:
        if not 200 <= call.status < 300:
            problems.append(f"{call}: {call.status} {call.out[:300]}")
            continue
        out_file = call.output_file
        if out_file == "/dev/null":  # the body is thrown away; what -w writes is the answer
            body = call.out
        elif out_file is not None:
            body = (work / out_file).read_text()
        else:
            body = call.out
        if not body.strip():
            problems.append(f"{call}: an empty body")
        elif "json" in call.content_type and out_file is None:
            if empties := empty_parts(json.loads(body)):
                problems.append(f"{call}: empty {', '.join(empties)}: {body[:300]}")
    assert problems == [], "\n".join(problems)

    # What the README says of some answers holds.
    for method, where, claim, check in CLAIMS:
        matching = [
            c
            for c in calls
            if c.method == method and re.search(where, c.path + (f"?{c.query}" if c.query else ""))
        ]
        assert matching, f"no example calls {method} {where} ({claim})"
        for call in matching:
            assert check(json.loads(call.out)), f"{call}: not {claim}: {call.out[:500]}"

    # The examples call every public route of the gateway at least once.
    spec = create_app(Settings()).openapi()
    called = {(c.method.lower(), c.path) for c in calls}
    missing = []
    for path, operations in spec["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(path)) + "$")
        for method in operations:
            if not any(m == method and pattern.match(p) for m, p in called):
                missing.append(f"{method.upper()} {path}")
    assert missing == []
    slowest = ", ".join(
        f"{c.method} {c.path} {c.seconds:.1f} s"
        for c in sorted(calls, key=lambda c: -c.seconds)[:6]
    )
    print(f"\n{len(calls)} calls in {len(run)} README blocks, {seconds:.1f} s; slowest: {slowest}")
