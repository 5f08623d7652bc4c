"""guestcpu against the installed libvirt, side by side on the same inputs.

``virsh -c test:///default cpu-baseline`` runs libvirt's own baseline offline with the
installed ``cpu_map``; guestcpu is pointed at the same map with ``--catalog-libvirt``.
The inputs are the 61 real CPUs of the corpus, decoded to host CPUs with that map,
baselined alone, in same-vendor pairs and as whole vendor groups.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.baseline import baseline
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpu, parse_cpudata
from guestcpu.model.cpu import CpuDefinition, CpuType

CPU_MAP = Path("/usr/share/libvirt/cpu_map")
VIRSH = shutil.which("virsh")
CPUTESTDATA = Path(__file__).parent / "data" / "libvirt-11.3" / "cputestdata"
DUMPS = sorted(p.with_suffix(".xml") for p in CPUTESTDATA.glob("x86_64-cpuid-*.sig"))

pytestmark = pytest.mark.libvirt

if VIRSH is None or not (CPU_MAP / "index.xml").exists():
    pytest.skip(
        "libvirt's virsh and /usr/share/libvirt/cpu_map are needed as a peer "
        "(Debian packages libvirt-clients and libvirt-daemon; `make test` installs them)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def peer_catalog() -> Catalog:
    return load_catalog(libvirt_dir=CPU_MAP)


@pytest.fixture(scope="module")
def host_cpus(peer_catalog: Catalog) -> dict[str, CpuDefinition]:
    hosts = {}
    for path in DUMPS:
        data = parse_cpudata(path.read_bytes(), path.name)
        hosts[path.stem.removeprefix("x86_64-cpuid-")] = decode(
            facts_from_cpuid(data, peer_catalog), peer_catalog, CpuType.HOST
        ).cpu
    return hosts


def virsh_baseline(cpus: list[CpuDefinition], tmp_path: Path, flags: list[str]) -> CpuDefinition | str:
    path = tmp_path / "cpus.xml"
    path.write_text("".join(format_cpu(c) for c in cpus))
    assert VIRSH is not None
    proc = subprocess.run(
        [VIRSH, "-c", "test:///default", "cpu-baseline", *flags, str(path)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        return proc.stderr.strip()
    return parse_cpu(proc.stdout.encode(), "virsh output")


def groups(hosts: dict[str, CpuDefinition]) -> Iterator[tuple[str, list[str]]]:
    names = sorted(hosts)
    by_vendor: dict[str | None, list[str]] = {}
    for name in names:
        by_vendor.setdefault(hosts[name].vendor, []).append(name)
    for name in names:
        yield name, [name]
    for members in by_vendor.values():
        for a, b in itertools.pairwise(members):
            yield f"{a}+{b}", [a, b]
        yield "all-" + str(hosts[members[0]].vendor), members


# The test driver refuses --migratable ("unsupported flags (0x2)"); libvirt's own
# migratable baseline is covered by the corpus test of x86_64-baseline-*-migratable.xml.
@pytest.mark.parametrize("flags", [[], ["--features"]], ids=["plain", "features"])
def test_baseline_equals_virsh(
    flags: list[str], host_cpus: dict[str, CpuDefinition], peer_catalog: Catalog, tmp_path: Path
) -> None:
    compared = 0
    disagreements = []
    for label, members in groups(host_cpus):
        cpus = [host_cpus[m] for m in members]
        theirs = virsh_baseline(cpus, tmp_path, flags)
        ours = baseline(cpus, peer_catalog, expand="--features" in flags).cpu
        compared += 1
        if isinstance(theirs, str):
            disagreements.append(f"{label}: virsh failed ({theirs}), guestcpu gave {ours.model}")
        elif format_cpu(ours) != format_cpu(theirs):
            disagreements.append(f"{label}: virsh {theirs.model} vs guestcpu {ours.model}")
    print(f"\nvirsh cpu-baseline {' '.join(flags) or '(plain)'}: {compared - len(disagreements)}/{compared} identical")
    assert compared > 100
    assert disagreements == []


@pytest.mark.parametrize("flags", [[], ["--features"]], ids=["plain", "features"])
def test_cli_baseline_output_equals_virsh(
    flags: list[str], host_cpus: dict[str, CpuDefinition], tmp_path: Path
) -> None:
    """The real commands on the same file print the same XML (virsh adds a blank line)."""
    import sys

    intel = [c for c in host_cpus.values() if c.vendor == "Intel"]
    amd = [c for c in host_cpus.values() if c.vendor == "AMD"]
    for group in (intel[:2], intel, amd[:3]):
        path = tmp_path / "cpus.xml"
        path.write_text("".join(format_cpu(c) for c in group))
        assert VIRSH is not None
        theirs = subprocess.run(
            [VIRSH, "-c", "test:///default", "cpu-baseline", *flags, str(path)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        ours = subprocess.run(
            [sys.executable, "-m", "guestcpu.cli.main", "--catalog-libvirt", str(CPU_MAP), "baseline", *flags,
             str(path)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        assert ours.strip() == theirs.strip()
