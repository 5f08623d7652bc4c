"""End-to-end CLI: ``guestcpu baseline`` against ``virsh cpu-baseline`` on the same files.

Both use the installed libvirt's cpu_map (guestcpu via ``--catalog-libvirt``), so the
work is the same.  Prints medians and the ratio guestcpu/virsh (below 1 = faster).

    .venv/bin/python benchmarks/bench_cli.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DUMPS, command_time
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpudata
from guestcpu.model.cpu import CpuType

CPU_MAP = "/usr/share/libvirt/cpu_map"


def main() -> list[tuple[str, float, float]]:
    virsh = shutil.which("virsh")
    guestcpu = str(Path(sys.executable).parent / "guestcpu")
    if virsh is None:
        print("virsh is not installed (Debian libvirt-clients + libvirt-daemon); nothing to compare against")
        return []
    catalog = load_catalog(libvirt_dir=Path(CPU_MAP))
    hosts = [decode(facts_from_cpuid(parse_cpudata(p.read_bytes(), p.name), catalog), catalog, CpuType.HOST).cpu
             for p in DUMPS]
    intel = [h for h in hosts if h.vendor == "Intel"]
    work = Path(tempfile.mkdtemp(prefix="guestcpu-bench-"))
    two = work / "two.xml"
    two.write_text(format_cpu(intel[0]) + format_cpu(intel[1]))
    many = work / "many.xml"
    many.write_text("".join(format_cpu(intel[i % len(intel)]) for i in range(1000)))

    cases = [
        ("baseline of 2 CPUs", [str(two)], []),
        ("baseline of 2 CPUs --features", [str(two)], ["--features"]),
        ("baseline of 1000 CPUs", [str(many)], []),
    ]
    results = []
    print(f"{'end-to-end CLI (median wall time)':<36} {'guestcpu ms':>12} {'virsh ms':>10} {'ratio':>7}")
    for label, files, flags in cases:
        ours = command_time([guestcpu, "--catalog-libvirt", CPU_MAP, "baseline", *flags, *files]) * 1000
        theirs = command_time([virsh, "-c", "test:///default", "cpu-baseline", *flags, *files]) * 1000
        results.append((label, ours, theirs))
        print(f"{label:<36} {ours:12.1f} {theirs:10.1f} {ours / theirs:6.2f}x")
    ours = command_time([guestcpu, "--version"]) * 1000
    print(f"{'guestcpu --version (start-up floor)':<36} {ours:12.1f}")
    ours = command_time([sys.executable, "-c", "pass"]) * 1000
    print(f"{'python -c pass (interpreter floor)':<36} {ours:12.1f}")
    shutil.rmtree(work)
    return results


if __name__ == "__main__":
    main()
