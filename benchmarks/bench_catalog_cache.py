"""The catalog cache: a validated JSON hit, against building the catalog and against unpickling it.

* JSON hit: ``load_catalog_cached`` on a valid cache (stat the sources, open the private
  folder, read, bound and parse the JSON, check every field, build the objects);
* build: ``load_catalog`` from the package data, what every call would cost without a cache;
* pickle.loads: the same catalog unpickled from memory, what the old (unsafe) pickle
  cache cost once the file was read; shown for reference only: guestcpu never reads
  a pickle from disk (docs/security.md).
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from guestcpu.catalog.cache import load_catalog_cached
from guestcpu.catalog.loader import load_catalog


def median_ms(fn: Callable[[], object], runs: int = 15, calls: int = 40) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1000)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["XDG_CACHE_HOME"] = home
        catalog = load_catalog_cached(dropin_dirs=[])
        blob = pickle.dumps(catalog, protocol=pickle.HIGHEST_PROTOCOL)
        hit = median_ms(lambda: load_catalog_cached(dropin_dirs=[]))
        build = median_ms(lambda: load_catalog(None, []), runs=5, calls=5)
        unpickle = median_ms(lambda: pickle.loads(blob))  # our own bytes, made just above
    print(f"{'what':<44} {'time':>9} {'ratio':>7}")
    print(f"{'catalog cache hit (validated JSON)':<44} {hit:8.2f}ms {'1.00':>7}  <= 5 ms")
    print(f"{'build from package data (no cache)':<44} {build:8.2f}ms {build / hit:6.1f}x")
    print(f"{'pickle.loads of the same catalog (reference)':<44} {unpickle:8.2f}ms {unpickle / hit:6.2f}x")


if __name__ == "__main__":
    main()
