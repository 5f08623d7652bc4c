"""Features that exist only under another one, and MSRs a KVM may refuse (pure data and rules).

QEMU clears a feature whose *gate* is off without a word: the IA32_ARCH_CAPABILITIES
bits (``rdctl-no``, ``mds-no`` ...) need ``arch-capabilities``, the VMX capability
MSRs (``vmx-ept`` ...) need ``vmx``, the SVM leaf (``npt`` ...) needs ``svm``: the
table is ``catalog.dependencies``, measured from QEMU.  So
``define`` either turns the gate on with the feature (saying so) or refuses, and a
hypervisor baseline never requires a feature whose gate it disables.

A nested KVM may advertise an MSR it then refuses to set (``failed to set MSR 0x10a``:
QEMU asserts and dies at start-up).  ``failed_msr`` finds that in QEMU's last output,
``msr_gate`` names the feature that makes QEMU write the MSR.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.dependencies import dependencies_for, nearest_parent
from guestcpu.model.features import Feature

#: MSR index -> (architectural name, the CPUID feature that makes QEMU set it)
MSR_GATES: dict[int, tuple[str, str]] = {
    0x10A: ("IA32_ARCH_CAPABILITIES", "arch-capabilities"),
    0x345: ("IA32_PERF_CAPABILITIES", "pdcm"),
    0xCF: ("IA32_CORE_CAPABILITIES", "core-capability"),
}
_FAILED_MSR = re.compile(r"failed to set MSR (0x[0-9a-fA-F]+)")


def gate_of(feature: Feature) -> str | None:
    """The feature ``feature`` needs first to exist at all (None: none), from QEMU's measured table."""
    return nearest_parent((*feature.qemu_names, feature.name))


def failed_msr(lines: Iterable[str]) -> int | None:
    """The MSR QEMU reports KVM refused to set, from its last output (None: not that failure)."""
    for line in lines:
        found = _FAILED_MSR.search(line)
        if found:
            return int(found.group(1), 16)
    return None


def msr_name(msr: int) -> str:
    known = MSR_GATES.get(msr)
    return f"MSR {msr:#x} ({known[0]})" if known else f"MSR {msr:#x}"


def msr_gate(msr: int) -> str | None:
    known = MSR_GATES.get(msr)
    return known[1] if known else None


def msr_dependants(msr: int, catalog: Catalog) -> list[Feature]:
    """Catalog features that are bits of ``msr``."""
    return [f for f in catalog.features if f.kind == "msr" and f.leaf == msr]


def without_msr(msr: int, catalog: Catalog, known: Iterable[str]) -> dict[str, bool]:
    """QEMU properties that stop QEMU from setting ``msr``: its gate and every bit of it, off."""
    names = set(known)
    props: dict[str, bool] = {}
    gate = msr_gate(msr)
    if gate is not None and catalog.has_feature(gate):
        props[catalog.feature(gate).qemu_name] = False
    for feature in msr_dependants(msr, catalog):
        if not names or feature.qemu_name in names:
            props[feature.qemu_name] = False
    return props


def without_ungated(bits: int, catalog: Catalog) -> int:
    """``bits`` without the features whose gate is not in ``bits`` (QEMU would clear them)."""
    return dependencies_for(catalog).without_orphans(bits)
