"""Run every benchmark under bench/ in turn: `python -m bench.run_all` (what `make bench` runs)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

SKIP = {"harness", "run_all"}


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
    failed = []
    for name in names:
        if name in SKIP or not name.startswith("bench_"):
            continue
        print(f"\n=== bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
