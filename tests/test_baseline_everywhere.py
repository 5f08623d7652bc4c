"""Which CPU is safe everywhere: a baseline every host's QEMU can start.

The hosts are this machine's real QEMU 7.2 under KVM, as it would be on three real
Intel CPUs of libvirt's corpus (QEMU's own ``host`` expansion recorded on each,
``lifecycle.capture.caps_on_other_cpu``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpudata
from guestcpu.formats.qemu_json import split_replies
from guestcpu.lifecycle.capture import caps_on_other_cpu
from guestcpu.model.cpu import CpuDefinition, CpuType
from guestcpu.qemu.cache import read_caps_file
from guestcpu.qemu.caps import QemuCaps, to_document
from guestcpu.qemu.hypervisor import baseline_everywhere, hypervisor_baseline, hypervisor_compare

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
HOSTS = ("Core-i7-8700", "Xeon-Gold-6148", "Xeon-E5-2650-v3")


def host_props(name: str) -> dict[str, Any]:
    path = CPUTESTDATA / f"x86_64-cpuid-{name}.json"
    reply = next(r for r in split_replies(path.read_text(), path.name) if r.get("id") == "model-expansion")
    props: dict[str, Any] = reply["return"]["model"]["props"]
    return props


@pytest.fixture(scope="module")
def fleet(catalog: Catalog) -> list[tuple[str, QemuCaps, CpuDefinition]]:
    kvm = read_caps_file(str(DATA / "qemu-7.2" / "caps-kvm.json"))
    hosts = []
    for name in HOSTS:
        dump = parse_cpudata((CPUTESTDATA / f"x86_64-cpuid-{name}.xml").read_bytes(), name)
        cpu = decode(facts_from_cpuid(dump, catalog), catalog, CpuType.HOST).cpu
        hosts.append((name, caps_on_other_cpu(kvm, host_props(name)), cpu))
    return hosts


def test_the_result_starts_on_every_host(fleet: list[tuple[str, QemuCaps, CpuDefinition]], catalog: Catalog) -> None:
    everywhere = baseline_everywhere([cpu for *_, cpu in fleet], [(n, caps) for n, caps, _ in fleet], catalog)
    assert [label for label, _ in everywhere.verdicts] == list(HOSTS)
    for label, verdict in everywhere.verdicts:
        assert verdict.comparison.missing_bits == 0, f"{label}: {verdict.comparison.reason}"
    # The Haswell-era Xeon E5-2650 v3 is the weakest: nothing newer than it can be everywhere.
    assert everywhere.result.qemu_model.startswith(("Haswell", "Broadwell", "IvyBridge", "SandyBridge"))


def test_one_hosts_baseline_is_not_safe_everywhere(
    fleet: list[tuple[str, QemuCaps, CpuDefinition]], catalog: Catalog
) -> None:
    """What 'baseline --hypervisor' on the strongest host alone gives fails on the weakest."""
    cpus = [cpu for *_, cpu in fleet[:2]]
    strongest = hypervisor_baseline(cpus, fleet[1][1], catalog)
    weakest = fleet[2][1]
    assert hypervisor_compare(strongest.cpu, weakest, catalog).comparison.missing_bits != 0


def test_cli_baseline_with_several_caps(
    fleet: list[tuple[str, QemuCaps, CpuDefinition]], tmp_path: Path
) -> None:
    args = []
    for name, caps, _ in fleet:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(to_document(caps)))
        args += ["--caps", str(path)]
    hosts = tmp_path / "hosts.xml"
    hosts.write_text("".join(format_cpu(cpu) for *_, cpu in fleet))
    out = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "baseline", "--json", *args, str(hosts)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["hosts"]) == 3 and all(h["result"] != "incompatible" for h in data["hosts"])
    assert data["accel"] == "kvm" and {h["accel"] for h in data["hosts"]} == {"kvm"}


def test_cli_compare_against_several_hosts_gives_one_verdict_each(
    fleet: list[tuple[str, QemuCaps, CpuDefinition]], tmp_path: Path
) -> None:
    """Skylake-Client-v1: fine on the Skylake-era hosts, not on the Haswell one.

    (Not the -IBRS variant: the Gold 6148 was recorded with microcode lacking spec-ctrl.)"""
    args = []
    for name, caps, _ in fleet:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(to_document(caps)))
        args += ["--caps", str(path)]
    guest = tmp_path / "g.xml"
    guest.write_text("<cpu mode='custom' match='exact'><model>Skylake-Client-v1</model></cpu>")
    out = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "compare", "--error", "--json", *args,
                          str(guest)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    data = json.loads(out.stdout)
    verdicts = {Path(h["caps"].split()[-1]).stem: h["result"] for h in data["hosts"]}
    assert verdicts["Xeon-E5-2650-v3"] == "incompatible"
    assert verdicts["Core-i7-8700"] != "incompatible" and verdicts["Xeon-Gold-6148"] != "incompatible"
    assert data["result"] == "incompatible" and data["missing_features"]
