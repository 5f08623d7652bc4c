"""Constants shared by the tests that run a real QEMU (their fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guestcpu.qemu.process import kvm_unusable_reason

QEMU = shutil.which("qemu-system-x86_64")
KVM_REASON = kvm_unusable_reason()
CPUTESTDATA = Path(__file__).parent / "data" / "libvirt-11.3" / "cputestdata"
needs_kvm = pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")

#: A Haswell without what TCG 7.2 cannot emulate: a CPU TCG gives exactly.
HASWELL_TCG = (
    "<cpu mode='custom' match='exact'><model fallback='forbid'>Haswell-noTSX</model>"
    "<feature policy='disable' name='pcid'/><feature policy='disable' name='x2apic'/>"
    "<feature policy='disable' name='tsc-deadline'/><feature policy='disable' name='invpcid'/></cpu>"
)


#: Two real CPUs of each vendor in libvirt's corpus (``-host.xml``: libvirt's host decode of the dump),
#: so a test baselines CPUs a host of its own vendor could be part of a fleet with.
HOSTS_BY_VENDOR = {
    "GenuineIntel": ("Core-i7-4600U", "Core-i5-6600"),
    "AuthenticAMD": ("EPYC-7601-32-Core", "Ryzen-7-1800X-Eight-Core"),
    "HygonGenuine": ("Hygon-C86-7185-32-core", "Hygon-C86-7185-32-core"),
}


def host_vendor() -> str:
    """This machine's CPUID vendor string (what /proc/cpuinfo reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "GenuineIntel"


def same_vendor_hosts(vendor: str | None) -> list[Path]:
    """Two corpus CPUs of ``vendor`` (TCG, which ignores the host: pass None for Intel's)."""
    names = HOSTS_BY_VENDOR.get(vendor or "GenuineIntel")
    if names is None:
        pytest.skip(f"the corpus has no CPUs of vendor {vendor}")
    return [CPUTESTDATA / f"x86_64-cpuid-{name}-host.xml" for name in names]
