"""In-process throughput of decode, compare and baseline on the 61 real CPUs.

    .venv/bin/python benchmarks/bench_engine.py
"""

from __future__ import annotations

import itertools
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from common import DUMPS, best_of, rate
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.baseline import baseline
from guestcpu.engine.compare import compare
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.formats.libvirt_xml import parse_cpudata
from guestcpu.model.cpu import CpuType


def main() -> list[tuple[str, float, str, bool]]:
    catalog = load_catalog(dropin_dirs=[])
    facts = [facts_from_cpuid(parse_cpudata(p.read_bytes(), p.name), catalog) for p in DUMPS]
    hosts = [decode(f, catalog, CpuType.HOST).cpu for f in facts]
    guests = [decode(f, catalog, CpuType.GUEST).cpu for f in facts]

    cycle = itertools.cycle(facts)
    decode_host = rate(lambda: decode(next(cycle), catalog, CpuType.HOST))
    decode_guest = rate(lambda: decode(next(cycle), catalog, CpuType.GUEST))

    pairs = itertools.cycle([(h, g) for h in hosts for g in guests if h.vendor == g.vendor])
    def one_compare() -> None:
        h, g = next(pairs)
        compare(h, g, catalog)
    compare_rate = rate(one_compare)

    catalog.compiled_cache.clear()
    cold = itertools.cycle([(h, g) for h in hosts for g in guests if h.vendor == g.vendor])
    def cold_compare() -> None:
        h, g = next(cold)
        catalog.compiled_cache.clear()
        compare(h, g, catalog)
    compare_cold = rate(cold_compare)

    intel = [h for h in hosts if h.vendor == "Intel"]
    thousand = [intel[i % len(intel)] for i in range(1000)]
    def baseline_1000() -> None:
        catalog.compiled_cache.clear()
        baseline(thousand, catalog)
    baseline_time = best_of(baseline_1000) * 1000
    compile_cpu(thousand[0], catalog)

    results = [
        ("decode, host flavour (CPUs/s)", decode_host, "", True),
        ("decode, guest flavour (CPUs/s)", decode_guest, "", True),
        ("compare, compiled CPUs cached (pairs/s)", compare_rate, ">= 100000", compare_rate >= 100_000),
        ("compare, compiling both CPUs each time (pairs/s)", compare_cold, "", True),
        ("baseline of 1000 real Intel CPUs (ms)", baseline_time, "<= 50", baseline_time <= 50),
    ]
    for label, value, target, ok in results:
        print(f"{label:<52} {value:12.1f}  target {target or '-':<10} {'ok' if ok else 'MISSED'}")
    return results


if __name__ == "__main__":
    main()
