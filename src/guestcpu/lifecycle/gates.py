"""What a KVM that refuses an MSR QEMU sets means for a pinned CPU (pure).

A nested KVM may advertise IA32_ARCH_CAPABILITIES (MSR 0x10a) and then refuse to set
it: QEMU asserts and dies at start-up.  ``msr_refusal`` turns that into one error that
names the MSR, the pinned features that make QEMU write it and what would start.
"""

from __future__ import annotations

from collections.abc import Iterable

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.gates import failed_msr, msr_dependants, msr_gate, msr_name
from guestcpu.errors import GuestCpuError
from guestcpu.lifecycle.pin import Abi


class MsrRefusedError(GuestCpuError):
    """KVM refused an MSR QEMU sets for this CPU, so QEMU died at start-up."""


def msr_refusal(lines: Iterable[str], abi: Abi, catalog: Catalog, where: str) -> MsrRefusedError | None:
    """One clear error for QEMU's 'failed to set MSR' abort (None: QEMU died of something else)."""
    msr = failed_msr(lines)
    if msr is None:
        return None
    gate = msr_gate(msr)
    requested = abi.props.get("requested-features") or {}
    bits = [f.qemu_name for f in msr_dependants(msr, catalog) if abi.features.get(f.qemu_name)]
    if abi.mode != "custom":
        on = [name for name in (gate, *bits) if name]
        why = f"-cpu {abi.model} sets it from this host's value ({', '.join(on)})"
    else:
        on = [name for name in (gate, *bits) if name and abi.features.get(name)]
        why = f"the pin has {', '.join(on)} on" if on else "QEMU sets it for this model"
    cure = f"<feature policy='disable' name='{gate}'/>" if gate else "a CPU without the features of that MSR"
    if requested.get(gate) is False:
        cure = "a CPU model without it"
    return MsrRefusedError(
        f"QEMU ({where}) could not start this CPU: KVM here refuses to set "
        f"{msr_name(msr)}, and {why} (a nested KVM that advertises the MSR but cannot set it). "
        f"What would start: the same CPU with {cure}"
        + ("; a host-model guest gets that from 'guestcpu define' on this host" if gate else "")
    )
