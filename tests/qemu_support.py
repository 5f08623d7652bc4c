"""Constants shared by the tests that run a real QEMU (their fixtures are in conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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



# -- every QEMU the live tests run on ---------------------------------------------------------
#: Where ``make qemu10`` (tools/install-qemu10.sh) unpacks QEMU 10.x from bookworm-backports.
QEMU10_BIN = Path(os.environ.get("GUESTCPU_TEST_QEMU10", "/var/cache/guestcpu-test/qemu-10/usr/bin"))


@dataclass(frozen=True)
class QemuBinaries:
    """One QEMU release's binaries (x86_64 and, when present, s390x)."""

    label: str
    x86_64: str
    s390x: str | None

    @property
    def major(self) -> int:
        return int(self.label.split(".")[0])


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (\d+\.\d+)", out)
    return match.group(1) if match else "?"


def _qemu10() -> tuple[QemuBinaries | None, str]:
    x86 = QEMU10_BIN / "qemu-system-x86_64"
    if not x86.is_file():
        return None, f"QEMU 10.x is not installed in {QEMU10_BIN} (run 'make qemu10')"
    label = _version(str(x86))
    if not label.startswith("10."):
        return None, f"{x86} is QEMU {label}, not 10.x"
    s390x = QEMU10_BIN / "qemu-system-s390x"
    return QemuBinaries(label, str(x86), str(s390x) if s390x.is_file() else None), ""


SYSTEM_QEMU = (QemuBinaries(_version(QEMU), QEMU, shutil.which("qemu-system-s390x")) if QEMU else None)
QEMU10, QEMU10_REASON = _qemu10()


def qemu_params() -> list[Any]:
    """pytest params: the system QEMU and QEMU 10.x, each skipped with the reason when absent."""
    params: list[Any] = []
    if SYSTEM_QEMU is not None:
        params.append(pytest.param(SYSTEM_QEMU, id=f"qemu{SYSTEM_QEMU.label}"))
    else:
        params.append(pytest.param(None, id="qemu-system",
                                   marks=pytest.mark.skip(reason="qemu-system-x86_64 is not installed")))
    if QEMU10 is not None:
        params.append(pytest.param(QEMU10, id=f"qemu{QEMU10.label}"))
    else:
        params.append(pytest.param(None, id="qemu10", marks=pytest.mark.skip(reason=QEMU10_REASON)))
    return params


needs_qemu10 = pytest.mark.skipif(QEMU10 is None, reason=QEMU10_REASON)

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


# -- processes a test started, found by a token on their command line --------------------
def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if token.encode() in cmdline and ") Z" not in state:
            found.append(int(entry.name))
    return found


def wait_gone(token: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and processes_with(token):
        time.sleep(0.05)
    return processes_with(token)
