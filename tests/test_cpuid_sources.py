"""CPUID sources: raw ``cpuid -r`` dumps and this host's own CPUID.

Inputs are real: a ``cpuid -r -1`` dump of the development machine
(tests/data/cpuid-raw/README.md), libvirt's 61 CPUID dumps of real CPUs, and, where
the host allows, this machine's live CPUID.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.formats import hostcpuid
from guestcpu.formats.cpuid_raw import (
    cpu_indexes,
    format_cpuid_raw,
    looks_like_cpuid_raw,
    mask_apic_ids,
    parse_cpuid_raw,
)
from guestcpu.formats.hostcpuid import (
    enumerate_cpuid,
    has_arch_capabilities,
    read_host_cpuid,
    reader_from_leaves,
)
from guestcpu.formats.libvirt_xml import parse_cpudata
from guestcpu.model.cpu import CpuType
from guestcpu.model.cpuid import REGISTERS, CpuidData, Signature

DATA = Path(__file__).parent / "data"
THIS_HOST = DATA / "cpuid-raw" / "this-host.txt"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
#: libvirt's CPUID dumps of real CPUs are the x86_64-cpuid-<cpu>.xml next to a .sig file.
LIBVIRT_DUMPS = sorted(p.with_suffix(".xml") for p in CPUTESTDATA.glob("x86_64-cpuid-*.sig"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


def read_dump(path: Path) -> CpuidData:
    return parse_cpudata(path.read_bytes(), path.name)


def dump_id(path: Path) -> str:
    return path.stem.removeprefix("x86_64-cpuid-")


def test_corpus_is_complete() -> None:
    assert len(LIBVIRT_DUMPS) == 61
    assert all(p.is_file() for p in LIBVIRT_DUMPS)


# -- the captured dump of this machine ----------------------------------------------


def test_this_host_fixture(catalog: Catalog) -> None:
    text = THIS_HOST.read_text()
    assert looks_like_cpuid_raw(text.encode())
    assert cpu_indexes(text, "this-host.txt") == [0]
    data = parse_cpuid_raw(text, "this-host.txt")

    assert data.vendor_string == "GenuineIntel"
    assert data.signature == Signature(family=6, model=0xA7, stepping=1)
    assert data.signature_eax == 0x000A0671
    assert data.model_name_string() == "Intel(R) Xeon(R) Processor"
    assert data.msrs == {}
    assert data.brand is None
    # Every line of the tool's output became a leaf (74 lines = 1 header + 73 leaves).
    assert len(data.leaves) == len(text.splitlines()) - 1
    assert data.leaves[(0x7, 0x0)] == (0x00000002, 0xF1BF2FFB, 0x1A415F46, 0x23C14010)
    assert data.leaves[(0xD, 0x12)] == (0x00002000, 0x00000B00, 0x00000006, 0x00000000)

    # APIC IDs masked: leaf 1 EBX[31:24] was 0x01, x2APIC IDs in 0xb/0x1f EDX were 1.
    assert data.leaves[(0x1, 0x0)][1] == 0x00020800
    assert all(regs[3] == 0 for (leaf, _), regs in data.leaves.items() if leaf in (0xB, 0x1F))
    unmasked = parse_cpuid_raw(text, "this-host.txt", mask_apic_id=False)
    assert unmasked.leaves[(0x1, 0x0)][1] == 0x01020800
    assert unmasked.leaves[(0xB, 0x0)][3] == 1

    names = set(catalog.names(catalog.features_from_cpuid(data)))
    present = {
        "sse4.2",
        "avx2",
        "avx512f",
        "avx512-fp16",
        "amx-tile",
        "lm",
        "nx",
        "hypervisor",
        "xsaves",
        "invtsc",
        "arch-capabilities",
    }
    assert present <= names, present - names
    assert not {"vmx", "svm", "sse4a", "pku", "waitpkg"} & names

    result = decode(facts_from_cpuid(data, catalog), catalog, CpuType.HOST)
    assert result.cpu.vendor == "Intel"
    assert result.model.vendor == "Intel"


def test_every_cpu_of_a_host_gives_the_same_data() -> None:
    """Masking makes the sections of different CPUs of one host equal (as libvirt's generator)."""
    one = parse_cpuid_raw(THIS_HOST.read_text(), "this-host.txt", mask_apic_id=False)
    sections = []
    for apic_id in (0, 1, 7):
        leaves = dict(one.leaves)
        eax, ebx, ecx, edx = leaves[(1, 0)]
        leaves[(1, 0)] = (eax, (ebx & 0x00FFFFFF) | apic_id << 24, ecx, edx)
        for key, (eax, ebx, ecx, _) in list(leaves.items()):
            if key[0] in (0xB, 0x1F):
                leaves[key] = (eax, ebx, ecx, apic_id)
        sections.append(format_cpuid_raw(CpuidData(leaves), cpu_index=apic_id))
    text = "".join(sections)
    assert cpu_indexes(text, "all") == [0, 1, 7]
    parsed = [parse_cpuid_raw(text, "all", cpu_index=i) for i in (0, 1, 7)]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0].leaves == mask_apic_ids(one.leaves)
    raw = [parse_cpuid_raw(text, "all", cpu_index=i, mask_apic_id=False) for i in (0, 1, 7)]
    assert raw[0] != raw[1] and raw[1].leaves[(0xB, 1)][3] == 1


# -- round trip of libvirt's dumps -------------------------------------------------


@pytest.mark.parametrize("path", LIBVIRT_DUMPS, ids=dump_id)
def test_round_trip_libvirt_dump(path: Path) -> None:
    data = read_dump(path)
    text = format_cpuid_raw(data)
    assert looks_like_cpuid_raw(text.encode())
    # Exact, brand and MSRs included (most of libvirt's dumps keep their APIC IDs).
    assert parse_cpuid_raw(text, path.name, mask_apic_id=False) == data
    # Read as usual, the same data with APIC IDs masked; masking is idempotent.
    masked = parse_cpuid_raw(text, path.name)
    assert masked == CpuidData(mask_apic_ids(data.leaves), data.msrs, data.brand)
    assert parse_cpuid_raw(format_cpuid_raw(masked), path.name) == masked


def test_round_trip_covers_msrs_and_brands() -> None:
    dumps = [read_dump(p) for p in LIBVIRT_DUMPS]
    assert sum(bool(d.msrs) for d in dumps) >= 5
    assert sum(bool(d.brand) for d in dumps) == 60  # FX-8150 has no comment line


# -- enumeration, driven by recorded dumps -----------------------------------------

#: Subleaves libvirt 11.3's virCPUx86GetHost does not read (none holds a catalog
#: feature): 0x18 TLB parameters, AMD 0x8000001d cache topology, AMD 0x80000020 PQoS.
_NOT_ENUMERATED_SUBLEAVES = {0x18, 0x8000001D, 0x80000020}


def _why_not_enumerated(key: tuple[int, int], regs: tuple[int, int, int, int], dump: CpuidData) -> str | None:
    leaf, sub = key
    max_basic = dump.register(0, 0, "eax")
    max_ext = dump.register(0x80000000, 0, "eax")
    if not (leaf <= max_basic or 0x80000000 <= leaf <= max_ext):
        return "out of range"  # e.g. 0x20000000, 0x80860000: echoes of the last basic leaf
    if leaf in (0xB, 0x1F) and not regs[2] & 0xFF00:
        return "invalid topology level"
    if leaf in _NOT_ENUMERATED_SUBLEAVES and sub > 0:
        return "subleaf libvirt does not read"
    return None


@pytest.mark.parametrize("path", LIBVIRT_DUMPS, ids=dump_id)
def test_enumeration_gives_back_the_dump(path: Path, catalog: Catalog) -> None:
    dump = read_dump(path)
    reads: list[tuple[int, int]] = []
    recorded = reader_from_leaves(dump.leaves)

    def read(leaf: int, sub: int) -> tuple[int, int, int, int]:
        reads.append((leaf, sub))
        return recorded(leaf, sub)

    leaves = enumerate_cpuid(read)
    expected = mask_apic_ids(dump.leaves)
    # Everything enumerated is in the dump, with the dump's (masked) values, never zeros.
    assert leaves, path.name
    for key, regs in leaves.items():
        assert expected.get(key) == regs, (path.name, hex(key[0]), key[1])
        assert any(regs)
    # Everything in the dump that was not enumerated has a reason.
    for key, regs in expected.items():
        if key not in leaves and any(regs):
            assert _why_not_enumerated(key, regs, dump), (path.name, hex(key[0]), key[1])
    # Nothing is read twice, and nothing a catalog feature lives in is lost.
    assert len(reads) == len(set(reads))
    assert catalog.features_from_cpuid(CpuidData(leaves, dump.msrs)) == catalog.features_from_cpuid(dump)
    # The main leaves are all there.
    max_basic = dump.register(0, 0, "eax")
    for leaf in range(max_basic + 1):
        if any(expected.get((leaf, 0), (0,))) and leaf not in (0xB, 0x12, 0x17, 0x1F):
            assert (leaf, 0) in leaves, (path.name, hex(leaf))


def test_enumeration_of_this_host_fixture() -> None:
    dump = parse_cpuid_raw(THIS_HOST.read_text(), "this-host.txt")
    leaves = enumerate_cpuid(reader_from_leaves(dump.leaves))
    assert sorted(k for k in leaves if k[0] in (0x4, 0x7, 0xB, 0xD, 0x1F)) == [
        (0x4, 0), (0x4, 1), (0x4, 2), (0x4, 3),
        (0x7, 0), (0x7, 1), (0x7, 2),
        (0xB, 0), (0xB, 1),
        (0xD, 0), (0xD, 1), (0xD, 2), (0xD, 5), (0xD, 6), (0xD, 7), (0xD, 0x11), (0xD, 0x12),
        (0x1F, 0), (0x1F, 1),
    ]  # fmt: skip
    # Hypervisor leaves and echoes past the last leaf are not CPU leaves.
    assert not any(0x20000000 <= leaf < 0x80000000 or leaf > 0x80000008 for leaf, _ in leaves)
    # No SGX (CPUID 7.0 EBX[2] clear): leaf 0x12 is not read although the tool printed it.
    assert not dump.leaves[(7, 0)][1] & (1 << 2) and (0x12, 0) in dump.leaves
    assert not any(leaf == 0x12 for leaf, _ in leaves)


def _leaves_with(**extra: tuple[int, int, int, int]) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    leaves = {(0, 0): (0x17, 0x756E6547, 0x6C65746E, 0x49656E69), (0x80000000, 0): (0x80000000, 0, 0, 0)}
    for name, regs in extra.items():
        leaf, _, sub = name.removeprefix("l").partition("_")
        leaves[(int(leaf, 16), int(sub or "0", 16))] = regs
    return leaves


def test_enumeration_sgx_needs_leaf7_bit() -> None:
    sgx = {"l12": (0x3, 0, 0, 0x1F), "l12_1": (0x36, 0, 0x1F, 0), "l12_2": (0x1, 0x80, 0, 0), "l12_3": (0, 0, 0, 0)}
    without = enumerate_cpuid(reader_from_leaves(_leaves_with(**sgx)))
    assert not any(leaf == 0x12 for leaf, _ in without)
    with_sgx = enumerate_cpuid(reader_from_leaves(_leaves_with(l7=(0, 1 << 2, 0, 0), **sgx)))
    assert sorted(sub for leaf, sub in with_sgx if leaf == 0x12) == [0, 1, 2]


def test_enumeration_leaf17_and_resource_ids() -> None:
    low = enumerate_cpuid(reader_from_leaves(_leaves_with(l17=(2, 1, 1, 1), l17_1=(5, 5, 5, 5))))
    assert not any(leaf == 0x17 for leaf, _ in low)
    high = enumerate_cpuid(
        reader_from_leaves(_leaves_with(l17=(3, 1, 1, 1), l17_1=(5, 5, 5, 5), l17_3=(6, 6, 6, 6), l17_4=(7, 7, 7, 7)))
    )
    assert sorted(sub for leaf, sub in high if leaf == 0x17) == [0, 1, 3]
    rdt = enumerate_cpuid(
        reader_from_leaves(_leaves_with(lf=(0, 0xFF, 0, 0b10), lf_1=(0, 1, 0xFF, 7), lf_2=(9, 9, 9, 9),
                                        l10=(0, 0b1100, 0, 0), l10_2=(1, 1, 1, 1), l10_3=(2, 2, 2, 2)))
    )  # fmt: skip
    assert sorted(k for k in rdt if k[0] in (0xF, 0x10)) == [(0xF, 0), (0xF, 1), (0x10, 0), (0x10, 2), (0x10, 3)]


def test_enumeration_is_bounded_with_a_broken_reader() -> None:
    count = 0

    def read(leaf: int, sub: int) -> tuple[int, int, int, int]:
        nonlocal count
        count += 1
        return (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)

    leaves = enumerate_cpuid(read)
    assert len(leaves) > 0 and count < 20000
    assert max(leaf for leaf, _ in leaves) < 0x80000000 + hostcpuid.MAX_LEAVES_PER_RANGE


def test_has_arch_capabilities() -> None:
    cooperlake = read_dump(CPUTESTDATA / "x86_64-cpuid-Cooperlake.xml")
    assert has_arch_capabilities(cooperlake.leaves) and 0x10A in cooperlake.msrs
    assert not has_arch_capabilities(read_dump(CPUTESTDATA / "x86_64-cpuid-Xeon-X5460.xml").leaves)


# -- read_host_cpuid, with its I/O replaced -----------------------------------------


def test_device_reader_decodes_little_endian(tmp_path: Path) -> None:
    device = tmp_path / "cpuid"
    device.write_bytes(bytes(range(16)) + (0x11223344).to_bytes(4, "little") * 4)
    fd = os.open(device, os.O_RDONLY)
    try:
        read = hostcpuid._device_reader(fd)
        assert read(0, 0) == (0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C)
        assert read(0x10, 0) == (0x11223344,) * 4
        with pytest.raises(OSError, match="short read"):
            read(0x11, 0)
    finally:
        os.close(fd)


def test_read_host_adds_arch_capabilities_msr(monkeypatch: pytest.MonkeyPatch) -> None:
    cooperlake = read_dump(CPUTESTDATA / "x86_64-cpuid-Cooperlake.xml")
    leaves = enumerate_cpuid(reader_from_leaves(cooperlake.leaves))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(hostcpuid, "_leaves_from_device", lambda: leaves)
    asked: list[int] = []

    def read_msr(index: int) -> int:
        asked.append(index)
        return 0x1234_0000_00AB

    monkeypatch.setattr(hostcpuid, "_read_msr", read_msr)
    data = read_host_cpuid()
    assert asked == [0x10A]
    assert data.leaves == leaves and data.msrs == {0x10A: 0x1234_0000_00AB}
    # Best effort: an unreadable MSR is left out, not an error.
    monkeypatch.setattr(hostcpuid, "_read_msr", lambda index: None)
    assert read_host_cpuid().msrs == {}


def test_read_host_without_any_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(hostcpuid, "CPUID_DEVICE", str(tmp_path / "no-such-cpuid"))
    loaded: list[str] = []
    monkeypatch.setattr(hostcpuid, "_modprobe", loaded.append)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GuestCpuError) as error:
        read_host_cpuid()
    message = str(error.value)
    assert loaded == ["cpuid"]
    assert "modprobe cpuid" in message and "apt install cpuid" in message and "\n" not in message


def test_read_host_on_other_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(GuestCpuError, match=r"aarch64.*needs an x86 host"):
        read_host_cpuid()


# -- live: this machine -------------------------------------------------------------


def _device_usable() -> bool:
    return os.access("/dev/cpu/0/cpuid", os.R_OK)


def _live_cpuid(*args: str) -> str:
    tool = shutil.which("cpuid")
    if tool is None:
        pytest.skip("the 'cpuid' tool is not installed (Debian package cpuid)")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=True, timeout=60).stdout


def test_live_host_matches_cpuid_tool(catalog: Catalog) -> None:
    if not _device_usable() and shutil.which("cpuid") is None:
        pytest.skip("neither /dev/cpu/0/cpuid is readable nor the 'cpuid' tool is installed")
    host = read_host_cpuid()
    live = parse_cpuid_raw(_live_cpuid("-r", "-1"), "cpuid -r -1")
    assert host.vendor_string == live.vendor_string
    assert host.signature == live.signature
    # The brand string leaves (an all-zero one is left out of ``host``, as libvirt does).
    for leaf in (0x80000002, 0x80000003, 0x80000004):
        assert [host.register(leaf, 0, r) for r in REGISTERS] == [live.register(leaf, 0, r) for r in REGISTERS]
    host_cpuid_only = CpuidData(host.leaves)
    assert catalog.names(catalog.features_from_cpuid(host_cpuid_only)) == catalog.names(
        catalog.features_from_cpuid(live)
    )
    assert set(host.msrs) <= {0x10A}
    hybrid = bool(host.register(7, 0, "edx") & (1 << 15))  # P/E cores differ in cache and topology leaves
    if not hybrid:
        # The leaves read are the tool's (masked) leaves, less those outside the enumeration rules.
        for key, regs in host.leaves.items():
            assert live.leaves.get(key) == regs, (hex(key[0]), key[1])


def test_live_tool_fallback_matches_device(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not _device_usable():
        pytest.skip("/dev/cpu/0/cpuid is not readable here (needs root and the cpuid module)")
    _live_cpuid("--version")
    device = read_host_cpuid()
    monkeypatch.setattr(hostcpuid, "CPUID_DEVICE", str(tmp_path / "absent"))
    monkeypatch.setattr(hostcpuid, "_modprobe", lambda module: None)
    tool = read_host_cpuid()
    assert tool.vendor_string == device.vendor_string and tool.signature == device.signature
    assert catalog.features_from_cpuid(tool) == catalog.features_from_cpuid(device)


def test_live_all_cpus_compare_equal() -> None:
    text = _live_cpuid("-r")
    indexes = cpu_indexes(text, "cpuid -r")
    assert indexes == list(range(len(indexes)))
    first = parse_cpuid_raw(text, "cpuid -r", 0)
    others = [parse_cpuid_raw(text, "cpuid -r", i) for i in indexes[1:]]
    # Hybrid CPUs (P/E cores) differ in some leaves; the identity never does.
    for other in others:
        assert other.vendor_string == first.vendor_string
        assert other.leaves[(7, 0)] == first.leaves[(7, 0)]


# -- bad input ----------------------------------------------------------------------

_LEAF0 = "   0x00000000 0x00: eax=0x0000000d ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65"


@pytest.mark.parametrize(
    ("text", "cpu_index", "expected"),
    [
        ("", 0, r"^dump is empty; expected the output of 'cpuid -r'"),
        ("  \n\n", 0, r"^dump is empty"),
        ("hello world\n", 0, r"^dump:1: cannot read 'hello world'; expected the output of 'cpuid -r'"),
        (f"CPU 0:\n{_LEAF0}\n   0x00000001 0x00: eax=0x00610f01 ebx=zzz\n", 0,
         r"^dump:3: cannot read '0x00000001 0x00: eax=0x00610f01 ebx=zzz'; expected"),
        (f"CPU 0:\n{_LEAF0}\n   0x00000001 0x00: eax=0x100000000 ebx=0x0 ecx=0x0 edx=0x0\n", 0,
         r"^dump:3: cannot read"),
        (f"{_LEAF0}\n", 0, r"^dump:1: CPUID values before any CPU section; .*'CPU 0:'"),
        ("# just a comment\n", 0, r"^dump has no 'CPU N:' section; expected"),
        (f"CPU 0:\n{_LEAF0}\nCPU 1:\n{_LEAF0}\n", 2, r"^dump: there is no CPU 2; the dump holds CPUs 0, 1$"),
        (f"CPU:\n{_LEAF0}\n", 1, r"^dump: there is no CPU 1; the dump holds one CPU \('cpuid -r -1' output\)"),
        ("CPU 0:\nCPU 1:\n" + _LEAF0 + "\n", 0, r"^dump: the section of CPU 0 has no CPUID leaves"),
        (f"CPU 0:\n{_LEAF0}\nCPU 0:\n{_LEAF0}\n", 0, r"^dump:3: CPU 0 appears twice"),
        (f"CPU 0:\n{_LEAF0}\n{_LEAF0}\n", 0, r"^dump:3: leaf 0x00000000 subleaf 0x00 appears twice"),
        (f"CPU:\n{_LEAF0}\nCPU:\n", 0, r"^dump:3: a second 'CPU:' section"),
        ("<cpudata arch='s390'>\n  <cpuid/>\n</cpudata>\n", 0,
         r"^dump: this is a libvirt <cpudata> dump for arch 's390'; CPUID dumps exist only for x86"),
        ("<!-- x -->\n<cpudata arch='x86'>\n</cpudata>\n", 0, r"^dump: this is a libvirt <cpudata> XML dump"),
        ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
         "CPU architecture: 8\n", 0, r"^dump: this is /proc/cpuinfo of an ARM CPU; CPUID exists only on x86"),
        ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme\n", 0, r"^dump: this is /proc/cpuinfo"),
        ("CPU 0:\n   vendor_id = \"GenuineIntel\"\n", 0, r"^dump:2: cannot read"),
        ("   vendor_id = \"GenuineIntel\"\n", 0, r"^dump: this is the decoded output of 'cpuid'; run 'cpuid -r'"),
    ],
    ids=[
        "empty", "blank", "garbage", "bad-register", "register-too-wide", "no-header", "only-comment",
        "absent-index", "absent-index-single", "empty-section", "duplicate-cpu", "duplicate-leaf",
        "two-anonymous", "s390-cpudata", "x86-cpudata", "arm-cpuinfo", "x86-cpuinfo", "decoded-with-header",
        "decoded-output",
    ],
)  # fmt: skip
def test_bad_input(text: str, cpu_index: int, expected: str) -> None:
    with pytest.raises(InputError, match=expected) as error:
        parse_cpuid_raw(text, "dump", cpu_index)
    assert "\n" not in str(error.value)


def test_looks_like_cpuid_raw() -> None:
    assert looks_like_cpuid_raw(THIS_HOST.read_bytes())
    assert looks_like_cpuid_raw(b"\n# comment\nCPU 3:\n")
    assert looks_like_cpuid_raw(_LEAF0.encode())  # headerless: parsed to give a precise error
    assert not looks_like_cpuid_raw(b"")
    assert not looks_like_cpuid_raw(b"<cpu><model>Haswell</model></cpu>")
    assert not looks_like_cpuid_raw(b"processor\t: 0\nCPU architecture: 8\nCPU implementer\t: 0x41\n")
    assert not looks_like_cpuid_raw(b"\x00\xff\xfe binary")


def test_format_writes_the_tools_layout() -> None:
    data = CpuidData({(0xD, 0x12): (1, 2, 3, 4), (0, 0): (0xD, 5, 6, 7)}, {0x10A: 0xC000E4B}, "Some CPU")
    assert format_cpuid_raw(data).splitlines() == [
        "# brand: Some CPU",
        "CPU 0:",
        "   0x00000000 0x00: eax=0x0000000d ebx=0x00000005 ecx=0x00000006 edx=0x00000007",
        "   0x0000000d 0x12: eax=0x00000001 ebx=0x00000002 ecx=0x00000003 edx=0x00000004",
        "   msr 0x0000010a: value=0x000000000c000e4b",
    ]
    # The tool's own lines are written exactly as it writes them.
    tool = parse_cpuid_raw(THIS_HOST.read_text(), "this-host.txt", mask_apic_id=False)
    assert format_cpuid_raw(tool).splitlines()[1:] == sorted(THIS_HOST.read_text().splitlines()[1:])
