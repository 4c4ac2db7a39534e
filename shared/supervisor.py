"""Run child processes, restart any that exits with a growing delay, and stop them together.

Usage: `Supervisor({"api": [python, "-m", "services.cli", "serve", "api"]}).run(stopping)`.
A crashed child never stops the others: it is started again after `backoff.delay(n)` seconds
(0.5 s, 1 s, 2 s ... up to 30 s), the count falling back to zero once it has run for
`stable_after` seconds. Every child gets SIGTERM when the supervisor itself dies (even by
SIGKILL) on Linux, so nothing is left running behind it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("autofix_ml.supervisor")

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, *, parent: int | None = None) -> None:
    """Have the kernel send `sig` to this process when its parent exits (Linux; no-op elsewhere).

    `parent`: the pid the caller expects as its parent; if that one is already gone (it died
    between fork and this call) the process signals itself at once.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before restart number `n` (0-based): `first * 2**n`, at most `cap`."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, restarts: int) -> float:
        return float(min(self.cap, self.first * 2 ** min(restarts, 30)))


@dataclass(slots=True)
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0  # in a row, without a stable run in between
    total_restarts: int = 0
    due_at: float | None = None  # when a crashed child is started again
    history: list[int] = field(default_factory=list)  # exit codes seen


class Supervisor:
    """Starts every child, restarts the ones that exit, stops all on `stop()`."""

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        *,
        env: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        stable_after: float = 60.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.children = {name: Child(name, list(argv)) for name, argv in commands.items()}
        self.env = dict(env if env is not None else os.environ)
        self.backoff = backoff or Backoff()
        self.stable_after = stable_after
        self.report = report or log.warning

    def _spawn(self, child: Child) -> None:
        parent = os.getpid()
        child.process = subprocess.Popen(
            list(child.argv),
            env=self.env,
            # SIGTERM (a clean shutdown of the service) when the supervisor dies, however.
            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent=parent),
        )
        child.started_at = time.monotonic()
        child.due_at = None

    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def poll(self, now: float | None = None) -> None:
        """Restart what is due, schedule a restart for what exited; call a few times a second."""
        now = time.monotonic() if now is None else now
        for child in self.children.values():
            if child.due_at is not None:
                if now >= child.due_at:
                    self.report(f"{child.name}: restarting (restart {child.total_restarts})")
                    self._spawn(child)
                continue
            proc = child.process
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            child.history.append(code)
            if now - child.started_at >= self.stable_after:
                child.restarts = 0
            delay = self.backoff.delay(child.restarts)
            child.restarts += 1
            child.total_restarts += 1
            child.due_at = now + delay
            how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
            self.report(f"{child.name} {how}; restarting in {delay:.1f} s, the others keep running")

    def run(self, stopping: Callable[[], bool], *, tick: float = 0.2) -> None:
        """Supervise until `stopping()` is true, then stop every child."""
        self.start()
        try:
            while not stopping():
                self.poll()
                time.sleep(tick)
        finally:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every running child, SIGKILL to those still running after `timeout`."""
        running = [c.process for c in self.children.values() if c.process is not None]
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
