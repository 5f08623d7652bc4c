"""Raw CPUID dumps as Debian's ``cpuid`` tool prints them (``cpuid -r``, ``cpuid -r -1``).

That tool is how libvirt's own test data is gathered (tests/cputestdata/cpu-data.py
runs ``cpuid -1r``), and it is what an admin can run on any x86 host, so a raw dump
is the easiest way to bring another machine's CPU here.  The format is::

    CPU 0:                      ("CPU:" for ``cpuid -r -1``, which reads one CPU)
       0x00000000 0x00: eax=0x00000024 ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69
       <leaf>     <subleaf>: the four registers CPUID returned
    CPU 1:
       ...

Reading is strict: a line that is neither a CPU header nor a leaf line is an error
(with its line number) rather than skipped, so a truncated or mangled paste is noticed
instead of silently decoding to a smaller CPU.

Two things the tool cannot express are written as guestcpu extensions, so that any
:class:`CpuidData` survives a write/read round trip; libvirt's reader and other
line-matching readers skip them:

* ``# brand: <text>`` — the CPU's marketing name (libvirt's ``<!-- ... -->`` comment);
* ``   msr 0x0000010a: value=0x...`` — an MSR (64-bit), e.g. IA32_ARCH_CAPABILITIES.

Other ``#`` lines are comments.  Leaf values are masked as libvirt's test generator
does (the APIC IDs in leaf 1 EBX[31:24] and in EDX of leaves 0xb and 0x1f), so dumps
taken on different CPUs of one host compare equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from guestcpu.errors import InputError
from guestcpu.model.cpuid import CpuidData

Leaves = dict[tuple[int, int], tuple[int, int, int, int]]

_HEADER = re.compile(r"^CPU(?:\s+(\d+))?:\s*$")
_LEAF = re.compile(
    r"^\s*0x([0-9a-fA-F]{1,8})\s+0x([0-9a-fA-F]{1,8}):\s*"
    r"eax=0x([0-9a-fA-F]{1,8})\s+ebx=0x([0-9a-fA-F]{1,8})\s+"
    r"ecx=0x([0-9a-fA-F]{1,8})\s+edx=0x([0-9a-fA-F]{1,8})\s*$"
)
_MSR = re.compile(r"^\s*msr\s+0x([0-9a-fA-F]{1,8}):\s*value=0x([0-9a-fA-F]{1,16})\s*$")
_BRAND = re.compile(r"^#\s*brand:\s?(.*)$")

_EXPECTED = (
    "expected the output of 'cpuid -r' or 'cpuid -r -1': a 'CPU 0:' (or 'CPU:') line, then lines like "
    "'   0x00000000 0x00: eax=0x... ebx=0x... ecx=0x... edx=0x...'"
)

#: (leaf, subleaf or None for all, register index, mask of the bits kept).  From
#: libvirt's tests/cputestdata/cpu-data.py: "pretend to always run on logical processor #0".
_APIC_ID_MASKS = (
    (0x01, 0, 1, 0x00FFFFFF),
    (0x0B, None, 3, 0x00000000),
    (0x1F, None, 3, 0x00000000),
)


def mask_apic_ids(leaves: Mapping[tuple[int, int], tuple[int, int, int, int]]) -> Leaves:
    """``leaves`` with the per-CPU APIC IDs zeroed, so any CPU of a host gives the same data."""
    out: Leaves = {}
    for (leaf, sub), regs in leaves.items():
        values = list(regs)
        for mask_leaf, mask_sub, reg, keep in _APIC_ID_MASKS:
            if leaf == mask_leaf and (mask_sub is None or sub == mask_sub):
                values[reg] &= keep
        out[(leaf, sub)] = (values[0], values[1], values[2], values[3])
    return out


def looks_like_cpuid_raw(data: bytes) -> bool:
    """Whether ``data`` is meant to be ``cpuid -r`` output (then parse it for the details).

    True when one of the first meaningful lines is a CPU header or a leaf line, so a
    damaged dump still reaches :func:`parse_cpuid_raw` and gets a precise error.
    """
    text = data[:65536].decode("utf-8", errors="replace")
    seen = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _HEADER.match(stripped) or _LEAF.match(line):
            return True
        seen += 1
        if seen >= 5:
            break
    return False


def _foreign_format_hint(text: str) -> str | None:
    """A specific message when ``text`` is some other well-known CPU description."""
    arch = re.search(r"<cpudata\s+arch=['\"]([^'\"]*)['\"]", text)
    if arch:
        if arch.group(1) != "x86":
            return (
                f"this is a libvirt <cpudata> dump for arch '{arch.group(1)}'; CPUID dumps exist only for "
                "x86 (arch='x86')"
            )
        return "this is a libvirt <cpudata> XML dump, not 'cpuid -r' output; read it as libvirt XML"
    if re.search(r"^CPU (implementer|architecture)\s*:", text, re.MULTILINE):
        return "this is /proc/cpuinfo of an ARM CPU; CPUID exists only on x86 (arch x86_64 or i686)"
    if re.search(r"^(vendor_id\s*:\s*IBM/S390|cpu\s*:\s*POWER)", text, re.MULTILINE):
        return "this is /proc/cpuinfo of a non-x86 CPU; CPUID exists only on x86 (arch x86_64 or i686)"
    if re.search(r"^flags\s*:", text, re.MULTILINE) and re.search(r"^processor\s*:", text, re.MULTILINE):
        return "this is /proc/cpuinfo, which has no raw CPUID values; run 'cpuid -r -1' on that host instead"
    if re.search(r"^\s*vendor_id = ", text, re.MULTILINE):
        return "this is the decoded output of 'cpuid'; run 'cpuid -r' (raw) instead"
    if re.search(r"^0x[0-9a-f]+: EAX=0x", text, re.MULTILINE):
        return "this is the output of the kernel's 'kcpuid' tool; run 'cpuid -r -1' (Debian package cpuid) instead"
    return None


def _describe(line: str) -> str:
    shown = line.strip()
    return repr(shown if len(shown) <= 60 else shown[:57] + "...")


def _parse_sections(text: str, source: str) -> tuple[dict[int, tuple[Leaves, dict[int, int]]], str | None, bool]:
    """Every CPU section: index -> (leaves, msrs); the brand; whether headers had no index."""
    sections: dict[int, tuple[Leaves, dict[int, int]]] = {}
    brand: str | None = None
    current: tuple[Leaves, dict[int, int]] | None = None
    anonymous = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            found = _BRAND.match(stripped)
            if found and brand is None:
                brand = found.group(1).strip() or None
            continue
        header = _HEADER.match(stripped)
        if header:
            if header.group(1) is None:
                if sections:
                    raise InputError(f"{source}:{number}: a second 'CPU:' section; 'cpuid -r -1' prints only one")
                anonymous = True
                index = 0
            else:
                if anonymous:
                    raise InputError(f"{source}:{number}: 'CPU {header.group(1)}:' after a 'CPU:' section; {_EXPECTED}")
                index = int(header.group(1))
                if index in sections:
                    raise InputError(f"{source}:{number}: CPU {index} appears twice; each 'CPU N:' section once")
            current = ({}, {})
            sections[index] = current
            continue
        leaf_line = _LEAF.match(line)
        msr_line = None if leaf_line else _MSR.match(line)
        if leaf_line is None and msr_line is None:
            raise InputError(f"{source}:{number}: cannot read {_describe(line)}; {_EXPECTED}")
        if current is None:
            raise InputError(
                f"{source}:{number}: CPUID values before any CPU section; the dump must start with "
                "'CPU 0:' ('cpuid -r') or 'CPU:' ('cpuid -r -1') — paste the whole output"
            )
        if leaf_line is not None:
            leaf, sub, eax, ebx, ecx, edx = (int(g, 16) for g in leaf_line.groups())
            if (leaf, sub) in current[0]:
                raise InputError(
                    f"{source}:{number}: leaf 0x{leaf:08x} subleaf 0x{sub:02x} appears twice in one CPU section; "
                    "each leaf/subleaf once"
                )
            current[0][(leaf, sub)] = (eax, ebx, ecx, edx)
        elif msr_line is not None:
            msr_index, value = (int(g, 16) for g in msr_line.groups())
            if msr_index in current[1]:
                raise InputError(f"{source}:{number}: MSR 0x{msr_index:x} appears twice in one CPU section")
            current[1][msr_index] = value
    return sections, brand, anonymous


def parse_cpuid_raw(text: str, source: str, cpu_index: int = 0, *, mask_apic_id: bool = True) -> CpuidData:
    """The CPUID data of CPU ``cpu_index`` (the first by default) in ``cpuid -r`` output.

    ``mask_apic_id=False`` keeps the APIC IDs as dumped (for exact round trips of dumps
    that were never masked, like most of libvirt's).
    """
    if not text.strip():
        raise InputError(f"{source} is empty; {_EXPECTED}")
    hint = _foreign_format_hint(text)
    if hint and not looks_like_cpuid_raw(text.encode()):
        raise InputError(f"{source}: {hint}")
    sections, brand, anonymous = _parse_sections(text, source)
    if not sections:
        raise InputError(f"{source} has no 'CPU N:' section; {_EXPECTED}")
    if cpu_index not in sections:
        if anonymous:
            have = "one CPU ('cpuid -r -1' output), index 0"
        else:
            have = f"CPUs {', '.join(str(i) for i in sorted(sections))}"
        raise InputError(f"{source}: there is no CPU {cpu_index}; the dump holds {have}")
    leaves, msrs = sections[cpu_index]
    if not leaves:
        raise InputError(f"{source}: the section of CPU {cpu_index} has no CPUID leaves; {_EXPECTED}")
    if mask_apic_id:
        leaves = mask_apic_ids(leaves)
    return CpuidData(leaves, msrs, brand)


def cpu_indexes(text: str, source: str) -> list[int]:
    """The CPU indexes a dump holds (``[0]`` for ``cpuid -r -1`` output)."""
    return sorted(_parse_sections(text, source)[0])


def format_cpuid_raw(data: CpuidData, cpu_index: int = 0) -> str:
    """``data`` as ``cpuid -r`` prints one CPU, plus the brand and MSR extension lines."""
    lines: list[str] = []
    if data.brand is not None:
        lines.append(f"# brand: {data.brand}")
    lines.append(f"CPU {cpu_index}:")
    for (leaf, sub), (eax, ebx, ecx, edx) in sorted(data.leaves.items()):
        lines.append(f"   0x{leaf:08x} 0x{sub:02x}: eax=0x{eax:08x} ebx=0x{ebx:08x} ecx=0x{ecx:08x} edx=0x{edx:08x}")
    for index, value in sorted(data.msrs.items()):
        lines.append(f"   msr 0x{index:08x}: value=0x{value:016x}")
    return "\n".join(lines) + "\n"
