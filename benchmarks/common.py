"""Shared helpers for the benchmarks (not part of the test run)."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPUTESTDATA = ROOT / "tests" / "data" / "libvirt-11.3" / "cputestdata"
DUMPS = sorted(p.with_suffix(".xml") for p in CPUTESTDATA.glob("x86_64-cpuid-*.sig"))


def rate(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()
    count = 0
    start = time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def command_time(argv: Sequence[str], repeat: int = 15) -> float:
    """Median wall time of a command, in seconds; it must succeed."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(label: str, ours: float, theirs: float | None, unit: str, target: str = "") -> str:
    ratio = f"{ours / theirs:6.2f}x" if theirs else "      -"
    theirs_text = f"{theirs:12.3f}" if theirs is not None else " " * 12
    return f"{label:<44} {ours:12.3f} {theirs_text} {ratio}  {unit:<8} {target}"
