"""Real CPUs for synthetic fleets, read from a libvirt ``cputestdata`` directory (I/O).

For a CPU with a recorded ``-json`` reply, QEMU's own static ``host`` expansion on it
(``x86_64-cpuid-NAME.json``, id ``model-expansion``) is the truth.  Older CPUs of the
corpus have none; for them the expansion is libvirt's guest decode of their CPUID
(``-guest.xml``: model plus features) made explicit through the catalog, with family
and model from the ``.sig`` file.  ``CorpusCpu.recorded`` tells the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.formats.libvirt_xml import parse_cpu
from guestcpu.formats.qemu_json import split_replies
from guestcpu.model.cpuid import Signature


@dataclass(frozen=True)
class CorpusCpu:
    name: str
    props: dict[str, Any]
    #: True: QEMU's recorded expansion; False: derived from libvirt's guest decode
    recorded: bool


def _recorded(path: Path) -> dict[str, Any] | None:
    for reply in split_replies(path.read_text(), path.name):
        if reply.get("id") == "model-expansion":
            props: dict[str, Any] = reply["return"]["model"]["props"]
            return props
    return None


def _derived(base: Path, name: str, catalog: Catalog) -> dict[str, Any]:
    cpu = parse_cpu((base / f"x86_64-cpuid-{name}-guest.xml").read_bytes(), name)
    bits = compile_cpu(cpu, catalog, name).all
    props: dict[str, Any] = {catalog.features[i].qemu_name: True for i in range(len(catalog.features)) if bits >> i & 1}
    if props.get("lm"):
        # Intel CPUs report SYSCALL in CPUID only in 64-bit mode (a dump from 32-bit userspace lacks it);
        # KVM gives it to every 64-bit guest.
        props["syscall"] = True
    # KVM gives every guest these whatever the host's CPUID says (QEMU's host expansion always has them).
    props.update({"hypervisor": True, "x2apic": True})
    vendor = catalog.model(cpu.model).vendor if cpu.model and catalog.has_model(cpu.model) else None
    if vendor:
        props["vendor"] = catalog.vendor(vendor).string
    sig = base / f"x86_64-cpuid-{name}.sig"
    if sig.exists():
        signature = Signature.from_eax(int(sig.read_text().split()[0], 16))
        props.update({"family": signature.family, "model": signature.model, "stepping": signature.stepping})
    return props


def corpus_cpus(directory: Path, catalog: Catalog) -> list[CorpusCpu]:
    """Every CPU of the corpus (one ``.sig`` file each), recorded expansions first."""
    found = []
    derived = []
    for sig in sorted(directory.glob("x86_64-cpuid-*.sig")):
        name = sig.name.removeprefix("x86_64-cpuid-").removesuffix(".sig")
        recorded = _recorded(directory / f"x86_64-cpuid-{name}.json") if (
            directory / f"x86_64-cpuid-{name}.json").exists() else None
        if recorded is not None:
            found.append(CorpusCpu(name, recorded, True))
        elif (directory / f"x86_64-cpuid-{name}-guest.xml").exists():
            derived.append(CorpusCpu(name, _derived(directory, name, catalog), False))
    # KVM's paravirtual features (kvmclock, kvm-pv-eoi …) are the kernel's, not the CPU's: every recorded
    # host expansion has them, and so does a derived one
    paravirt = set.intersection(*({k for k, v in c.props.items() if v is True and k.startswith("kvm")}
                                  for c in found)) if found else set()
    for cpu in derived:
        cpu.props.update(dict.fromkeys(sorted(paravirt), True))
    return found + derived
