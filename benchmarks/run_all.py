"""Run every benchmark, each printing guestcpu against its peer side by side.

    make bench     (or .venv/bin/python benchmarks/run_all.py)
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for name in ("bench_engine.py", "bench_catalog_cache.py", "bench_cli.py", "bench_probe.py", "bench_fleet.py"):
    path = HERE / name
    if not path.exists():
        continue
    print(f"\n=== {name}")
    # the fleet benchmark also runs against a private PostgreSQL server when Debian's postgresql is installed
    sys.argv = [str(path), *(["--postgresql", "auto"] if name == "bench_fleet.py" else [])]
    runpy.run_path(str(path), run_name="__main__")
