"""Features that exist only under another one, and MSRs a KVM may refuse (pure data and rules).

QEMU clears a feature whose *gate* is off without a word: the IA32_ARCH_CAPABILITIES
bits (``rdctl-no``, ``mds-no`` ...) need ``arch-capabilities``, the VMX capability
MSRs (``vmx-ept`` ...) need ``vmx``, the SVM leaf (``npt`` ...) needs ``svm``.  So
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
from guestcpu.model.features import Feature

#: MSR index -> (architectural name, the CPUID feature that makes QEMU set it)
MSR_GATES: dict[int, tuple[str, str]] = {
    0x10A: ("IA32_ARCH_CAPABILITIES", "arch-capabilities"),
    0x345: ("IA32_PERF_CAPABILITIES", "pdcm"),
    0xCF: ("IA32_CORE_CAPABILITIES", "core-capability"),
}
#: VMX capability MSRs (IA32_VMX_BASIC .. IA32_VMX_VMFUNC) exist only with vmx; some only
#: with a control of another one (the secondary controls, EPT/VPID capabilities, VM functions)
VMX_MSRS = range(0x480, 0x492)
VMX_MSR_GATES: dict[int, str] = {0x48B: "vmx-secondary-ctls", 0x48C: "vmx-ept", 0x491: "vmx-vmfunc"}
#: CPUID leaves whose bits exist only with another feature
LEAF_GATES: dict[int, str] = {0x8000000A: "svm", 0x14: "intel-pt"}

_FAILED_MSR = re.compile(r"failed to set MSR (0x[0-9a-fA-F]+)")


def gate_of(feature: Feature) -> str | None:
    """The catalog feature ``feature`` needs to exist at all (None: none)."""
    if feature.kind == "msr":
        if feature.leaf in MSR_GATES:
            return MSR_GATES[feature.leaf][1]
        if feature.leaf in VMX_MSRS:
            gate = VMX_MSR_GATES.get(feature.leaf, "vmx")
            return gate if gate != feature.name else "vmx"
        return None
    return LEAF_GATES.get(feature.leaf)


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
    while True:
        kept = bits
        for feature in catalog.features:
            if bits >> feature.index & 1:
                gate = gate_of(feature)
                if gate is not None and catalog.has_feature(gate) and not bits >> catalog.feature(gate).index & 1:
                    kept &= ~(1 << feature.index)
        if kept == bits:
            return bits
        bits = kept
