"""This host's own CPUID, read the way libvirt's virCPUx86GetHost reads it.

Which leaves and subleaves exist is itself encoded in CPUID (leaf 0 gives the last
basic leaf, leaf 4 ends at an empty cache level, leaf 0xd lists its subleaves as a
bitmap, ...).  :func:`enumerate_cpuid` holds those rules as a pure function over a
``read(leaf, subleaf)`` callable, so they are tested against libvirt's dumps of real
CPUs without touching hardware.  The only I/O here is getting such a callable:

1. the kernel's ``/dev/cpu/0/cpuid`` (root; ``modprobe cpuid`` is tried once if the
   device is missing) — exact, and always CPU 0;
2. else Debian's ``cpuid -r -1``, its output parsed and fed through the same
   enumeration, so both paths yield the same set of leaves;
3. else a :class:`GuestCpuError` saying how to make one of them work.

Like libvirt, all-zero leaves are left out and IA32_ARCH_CAPABILITIES (MSR 0x10a) is
read best-effort from ``/dev/cpu/0/msr`` when CPUID says it exists.  APIC IDs are
masked as in :mod:`guestcpu.formats.cpuid_raw`, so the result does not depend on which
CPU answered.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping

from guestcpu.errors import GuestCpuError, InputError
from guestcpu.formats.cpuid_raw import Leaves, mask_apic_ids, parse_cpuid_raw
from guestcpu.model.cpuid import CpuidData

Registers = tuple[int, int, int, int]
CpuidReader = Callable[[int, int], Registers]

BASIC = 0x00000000
EXTENDED = 0x80000000
MSR_ARCH_CAPABILITIES = 0x10A

#: A broken reader (or hypervisor) must not make enumeration loop for ever; real CPUs
#: stay far below these (basic max ~0x24, extended ~0x80000028, a few dozen subleaves).
MAX_LEAVES_PER_RANGE = 0x100
MAX_SUBLEAVES = 64

CPUID_DEVICE = "/dev/cpu/0/cpuid"
MSR_DEVICE = "/dev/cpu/0/msr"
_X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"})


# -- pure: which leaves to read ------------------------------------------------------


def _subleaves(
    read: CpuidReader, leaf: int, sub0: Registers, leaves: Mapping[tuple[int, int], Registers]
) -> list[tuple[int, Registers]]:
    """The (subleaf, registers) pairs of ``leaf`` worth keeping, given its subleaf 0.

    Mirrors libvirt 11.3's cpuidSetLeaf* helpers (src/cpu/cpu_x86.c); ``leaves`` is what
    was read so far (leaf 0x12 depends on leaf 7).
    """
    eax, ebx, _, edx = sub0
    if leaf == 0x4:
        # Deterministic cache parameters: sub n+1 exists while eax[4:0] (cache type) of n != 0.
        out = [(0, sub0)]
        regs, sub = sub0, 0
        while regs[0] & 0x1F and sub < MAX_SUBLEAVES:
            sub += 1
            regs = read(leaf, sub)
            out.append((sub, regs))
        return out
    if leaf in (0x7, 0x14):
        # Structured features / processor trace: subleaf 0 eax is the last subleaf.
        return [(0, sub0)] + [(sub, read(leaf, sub)) for sub in range(1, min(eax, MAX_SUBLEAVES) + 1)]
    if leaf in (0xB, 0x1F):
        # Extended topology: a level is valid while ecx[15:8] (level type) != 0.  libvirt
        # 11.3 reads only subleaf 0 of 0x1f; its levels follow the same rule as 0xb's.
        out = []
        regs, sub = sub0, 0
        while regs[2] & 0xFF00 and sub < MAX_SUBLEAVES:
            out.append((sub, regs))
            sub += 1
            regs = read(leaf, sub)
        return out
    if leaf == 0xD:
        # XSAVE state: subleaves 0 and 1, and n where bit n of sub0 eax:edx or sub1 ecx:edx is set.
        sub1 = read(leaf, 1)
        out = [(0, sub0), (1, sub1)]
        low, high = eax | sub1[2], edx | sub1[3]
        for sub in range(2, 64):
            if (low >> sub if sub < 32 else high >> (sub - 32)) & 1:
                out.append((sub, read(leaf, sub)))
        return out
    if leaf in (0xF, 0x10):
        # RDT monitoring / allocation: resource ids are bits 1..31 of sub0 edx (0xf) or ebx (0x10).
        resources = edx if leaf == 0xF else ebx
        return [(0, sub0)] + [(sub, read(leaf, sub)) for sub in range(1, 32) if resources >> sub & 1]
    if leaf == 0x12:
        # SGX: only with CPUID 7.0 EBX[2]; subleaves 0, 1, then n >= 2 while eax[3:0] != 0.
        if not leaves.get((7, 0), (0, 0, 0, 0))[1] & (1 << 2):
            return []
        out = [(0, sub0), (1, read(leaf, 1))]
        sub = 2
        regs = read(leaf, sub)
        while regs[0] & 0xF and sub < MAX_SUBLEAVES:
            out.append((sub, regs))
            sub += 1
            regs = read(leaf, sub)
        return out
    if leaf == 0x17:
        # SoC vendor: valid only when sub0 eax (last subleaf) >= 3.
        if eax < 3:
            return []
        return [(0, sub0)] + [(sub, read(leaf, sub)) for sub in range(1, min(eax, MAX_SUBLEAVES) + 1)]
    return [(0, sub0)]


def enumerate_cpuid(read: CpuidReader) -> Leaves:
    """Every CPUID leaf and subleaf a CPU reports, as libvirt's virCPUx86GetHost reads them.

    Basic leaves 0..(leaf 0 eax) and extended 0x80000000..(leaf 0x80000000 eax), with
    the subleaves each leaf defines; all-zero results are left out and APIC IDs masked.
    """
    leaves: Leaves = {}
    for base in (BASIC, EXTENDED):
        first = read(base, 0)
        last = first[0]
        if last < base:
            continue  # no leaves in this range (libvirt's loop does not run either)
        last = min(last, base + MAX_LEAVES_PER_RANGE - 1)
        for leaf in range(base, last + 1):
            sub0 = first if leaf == base else read(leaf, 0)
            for sub, regs in _subleaves(read, leaf, sub0, leaves):
                if any(regs):
                    leaves[(leaf, sub)] = regs
    return mask_apic_ids(leaves)


def reader_from_leaves(leaves: Mapping[tuple[int, int], Registers]) -> CpuidReader:
    """A reader answering from recorded leaves (zeros for anything not recorded)."""

    def read(leaf: int, subleaf: int) -> Registers:
        return leaves.get((leaf, subleaf), (0, 0, 0, 0))

    return read


def has_arch_capabilities(leaves: Mapping[tuple[int, int], Registers]) -> bool:
    """CPUID 7.0 EDX[29]: the IA32_ARCH_CAPABILITIES MSR exists."""
    return bool(leaves.get((7, 0), (0, 0, 0, 0))[3] & (1 << 29))


# -- I/O: where the values come from -------------------------------------------------


def _modprobe(module: str) -> None:
    """Load a kernel module, best effort (not root, no modprobe, built in: all fine)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["modprobe", module], capture_output=True, timeout=30, check=False)


def _open_device(path: str, module: str) -> int:
    """An fd for a /dev/cpu/0 device, loading its module once if the device is missing."""
    if not os.path.exists(path):
        _modprobe(module)
    return os.open(path, os.O_RDONLY)


def _device_reader(fd: int) -> CpuidReader:
    def read(leaf: int, subleaf: int) -> Registers:
        raw = os.pread(fd, 16, leaf | (subleaf << 32))
        if len(raw) != 16:
            raise OSError(f"short read of {len(raw)} bytes from {CPUID_DEVICE}")
        return (
            int.from_bytes(raw[0:4], "little"),
            int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"),
            int.from_bytes(raw[12:16], "little"),
        )

    return read


def _leaves_from_device() -> Leaves:
    fd = _open_device(CPUID_DEVICE, "cpuid")
    try:
        return enumerate_cpuid(_device_reader(fd))
    finally:
        os.close(fd)


def _leaves_from_tool() -> Leaves:
    tool = shutil.which("cpuid")
    if tool is None:
        raise FileNotFoundError("the 'cpuid' tool is not installed")
    result = subprocess.run([tool, "-r", "-1"], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise OSError(f"'cpuid -r -1' failed with status {result.returncode}: {detail}")
    try:
        dumped = parse_cpuid_raw(result.stdout, "'cpuid -r -1' output", mask_apic_id=False)
    except InputError as error:
        raise OSError(str(error)) from None
    return enumerate_cpuid(reader_from_leaves(dumped.leaves))


def _read_msr(index: int) -> int | None:
    try:
        fd = _open_device(MSR_DEVICE, "msr")
    except OSError:
        return None
    try:
        raw = os.pread(fd, 8, index)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def read_host_cpuid() -> CpuidData:
    """This host's CPUID leaves (and IA32_ARCH_CAPABILITIES when readable)."""
    machine = platform.machine().lower()
    if machine not in _X86_MACHINES:
        raise GuestCpuError(f"this host is {machine or 'of unknown arch'}; reading CPUID needs an x86 host")
    try:
        leaves = _leaves_from_device()
    except OSError as device_error:
        try:
            leaves = _leaves_from_tool()
        except (OSError, subprocess.SubprocessError) as tool_error:
            raise GuestCpuError(
                f"cannot read this host's CPUID: {CPUID_DEVICE}: {device_error.strerror or device_error}; "
                f"cpuid tool: {tool_error}. Run as root with the cpuid kernel module loaded ('modprobe cpuid'), "
                "or install the Debian package 'cpuid' (apt install cpuid)"
            ) from None
    if not leaves:
        raise GuestCpuError("this host's CPUID returned no leaves; is this an x86 CPU?")
    msrs: dict[int, int] = {}
    if has_arch_capabilities(leaves):
        value = _read_msr(MSR_ARCH_CAPABILITIES)
        if value is not None:
            msrs[MSR_ARCH_CAPABILITIES] = value
    return CpuidData(leaves, msrs)
