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

