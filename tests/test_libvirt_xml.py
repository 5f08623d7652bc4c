"""libvirt XML read and written as libvirt does: round trips and byte-for-byte output.

Inputs are libvirt 11.3's own test files (tests/data/libvirt-11.3) and small
capabilities / domain capabilities / domain documents modelled on real libvirt
output (tests/data/xml).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.decode import decode, facts_from_cpuid
from guestcpu.errors import InputError
from guestcpu.formats.libvirt_xml import (
    format_cpu,
    format_cpudata,
    parse_cpu,
    parse_cpudata,
    parse_cpus,
)
from guestcpu.formats.qemu_json import definitions_from_reply, models_with_blockers, split_replies
from guestcpu.model.cpu import (
    Check,
    CpuDefinition,
    CpuType,
    Fallback,
    FeatureRequest,
    Match,
    Mode,
    Policy,
    Topology,
)
from guestcpu.model.cpuid import CpuidData

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
XML = DATA / "xml"
MANIFEST = json.loads((DATA / "libvirt-11.3" / "cputest_manifest.json").read_text())["cases"]

_CPU_TAG = re.compile(rb"<cpu[\s>/]")


def corpus_cpu_files() -> list[Path]:
    """Every x86_64-*.xml of libvirt's corpus that holds <cpu> elements (not the <cpudata> dumps)."""
    return [p for p in sorted(CPUTESTDATA.glob("x86_64-*.xml")) if _CPU_TAG.search(p.read_bytes())]


CORPUS_CPU_FILES = corpus_cpu_files()
FIXTURES = sorted(XML.glob("*.xml"))
CPUDATA_FILES = [p for p in sorted(CPUTESTDATA.glob("x86_64-cpuid-*.xml")) if b"<cpudata" in p.read_bytes()]

#: round-trip failures that are bugs in src/ (see the xfail reasons)
ROUND_TRIP_BUGS: dict[str, str] = {}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


def roundtrip(cpu: CpuDefinition) -> CpuDefinition:
    return parse_cpu(format_cpu(cpu).encode(), "formatted")


def _file_params(paths: list[Path]) -> list[Any]:
    params = []
    for path in paths:
        marks = []
        if path.name in ROUND_TRIP_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=ROUND_TRIP_BUGS[path.name]))
        params.append(pytest.param(path, id=path.name.removeprefix("x86_64-").removesuffix(".xml"), marks=marks))
    return params


# -- round trips -----------------------------------------------------------------------


def test_corpus_has_the_expected_cpu_files() -> None:
    assert len(CORPUS_CPU_FILES) >= 250
    names = {p.name for p in CORPUS_CPU_FILES}
    assert "x86_64-host.xml" in names and "x86_64-cpuid-Core-i7-7700-host.xml" in names
    assert not any(b"<cpudata" in p.read_bytes() for p in CORPUS_CPU_FILES)


@pytest.mark.parametrize("path", _file_params(CORPUS_CPU_FILES + FIXTURES))
def test_parse_format_parse_is_stable(path: Path) -> None:
    cpus = parse_cpus(path.read_bytes(), path.name)
    assert cpus
    for cpu in cpus:
        again = roundtrip(cpu)
        assert again == cpu
        assert again.extra_xml == cpu.extra_xml
        # and formatting is a fixed point
        assert format_cpu(again) == format_cpu(cpu)


# -- decoded CPUs are byte-identical to libvirt's expected files -----------------------


def _qemu_models(cpuid_name: str, catalog: Catalog) -> dict[str, tuple[str, ...]] | None:
    path = CPUTESTDATA / cpuid_name.replace(".xml", ".json")
    for reply in split_replies(path.read_text(), path.name):
        if reply.get("id") == "definitions":
            return models_with_blockers(definitions_from_reply(reply, catalog))
    return None


DECODE_CASES = [
    pytest.param(c, id=f"{c['input_cpuid'].removeprefix('x86_64-cpuid-').removesuffix('.xml')}:{c['kind'][6:]}")
    for c in MANIFEST
    if c["arch"] == "x86_64" and c["kind"] in ("cpuid_host", "cpuid_guest")
]


def test_decode_cases_cover_61_cpus_twice() -> None:
    assert len(DECODE_CASES) == 122
    assert len({p.values[0]["input_cpuid"] for p in DECODE_CASES}) == 61


@pytest.mark.parametrize("case", DECODE_CASES)
def test_decoded_cpu_formats_byte_identical(case: dict[str, Any], catalog: Catalog) -> None:
    name = case["input_cpuid"]
    data = parse_cpudata((CPUTESTDATA / name).read_bytes(), name)
    if case["kind"] == "cpuid_host":
        cpu_type, models = CpuType.HOST, None
    else:
        # libvirt's guest decode used the models QEMU offered (and their blockers) where it had them
        cpu_type = CpuType.GUEST
        models = _qemu_models(name, catalog) if case["json_kind"].startswith("JSON_MODELS") else None
    ours = format_cpu(decode(facts_from_cpuid(data, catalog), catalog, cpu_type, models=models).cpu)
    expected = (CPUTESTDATA / case["expected_output"]).read_text()
    assert ours.rstrip("\n") == expected.rstrip("\n")


# -- <cpudata> -------------------------------------------------------------------------


@pytest.mark.parametrize("path", CPUDATA_FILES, ids=lambda p: p.name.removeprefix("x86_64-cpuid-").removesuffix(".xml"))
def test_cpudata_format_parse_round_trip(path: Path) -> None:
    raw = path.read_text()
    data = parse_cpudata(raw.encode(), path.name)
    assert data.leaves
    text = format_cpudata(data)
    again = parse_cpudata(text.encode(), "formatted")
    assert again.leaves == data.leaves
    assert again.msrs == data.msrs
    # the element itself is written exactly as libvirt writes it
    assert text == raw[raw.index("<cpudata") :]


def test_cpudata_brand_comment_and_msr() -> None:
    path = CPUTESTDATA / "x86_64-cpuid-Core-i7-7700.xml"
    data = parse_cpudata(path.read_bytes(), path.name)
    assert data.brand == "Intel(R) Core(TM) i7-7700 CPU @ 3.60GHz"
    assert data.vendor_string == "GenuineIntel"
    assert data.signature is not None and (data.signature.family, data.signature.model) == (6, 158)
    synthetic = CpuidData(
        {(0, 0): (0xD, 0x68747541, 0x444D4163, 0x69746E65), (7, 0): (0, 1 << 3, 0, 0)},
        {0x10A: (1 << 32) | 0xC000C04},
    )
    text = format_cpudata(synthetic)
    assert "<msr index='0x10a' edx='0x00000001' eax='0x0c000c04'/>" in text
    assert "<cpuid eax_in='0x00000007' ecx_in='0x00' eax='0x00000000' ebx='0x00000008'" in text
    again = parse_cpudata(text.encode(), "synthetic")
    assert again.leaves == synthetic.leaves and again.msrs == synthetic.msrs
    assert again.vendor_string == "AuthenticAMD"


# -- capabilities, domain capabilities, domain -----------------------------------------


def _features(path: Path) -> list[str]:
    return re.findall(r"<feature (?:policy='\w+' )?name='([^']+)'/>", path.read_text())


def test_capabilities_yield_the_host_cpu() -> None:
    path = XML / "capabilities-core-i7-7700.xml"
    cpu = parse_cpu(path.read_bytes(), path.name)
    assert cpu.type is CpuType.HOST
    assert (cpu.arch, cpu.model, cpu.vendor) == ("x86_64", "Skylake-Client-v1", "Intel")
    assert cpu.microcode == "248"
    assert cpu.signature == (6, 158, 9)
    assert cpu.topology == Topology(sockets=1, cores=4, threads=2, dies=1, clusters=1)
    assert [f.name for f in cpu.features] == _features(CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-host.xml")
    assert all(f.policy is None for f in cpu.features)
    # NUMA <cpu id=...> entries under <topology> are not mistaken for host CPUs
    assert len(parse_cpus(path.read_bytes(), path.name)) == 1
    extras = " ".join(cpu.extra_xml)
    assert "counter" in extras and "maxphysaddr" in extras and "pages" in extras
    # the same CPU as libvirt's expected host decode of this dump, plus what a live host adds
    expected = parse_cpu((CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-host.xml").read_bytes(), "expected")
    assert cpu.with_(microcode=None, topology=None) == expected


def test_domcapabilities_yield_the_host_model_cpu() -> None:
    path = XML / "domcapabilities-core-i7-7700.xml"
    cpus = parse_cpus(path.read_bytes(), path.name)
    assert len(cpus) == 1
    cpu = cpus[0]
    assert cpu.type is CpuType.GUEST
    assert (cpu.mode, cpu.match, cpu.fallback) == (Mode.CUSTOM, Match.EXACT, Fallback.FORBID)
    assert (cpu.model, cpu.vendor) == ("Skylake-Client", "Intel")
    # libvirt's own expected host-model for this CPU (cputest's -json.xml)
    expected = parse_cpu((CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-json.xml").read_bytes(), "expected")
    assert cpu == expected
    assert format_cpu(cpu) == (CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-json.xml").read_text()


def test_domcapabilities_without_host_model(tmp_path: Path) -> None:
    text = (XML / "domcapabilities-core-i7-7700.xml").read_text()
    unsupported = re.sub(
        r"<mode name='host-model' supported='yes'>.*?</mode>",
        "<mode name='host-model' supported='no'/>",
        text,
        flags=re.S,
    )
    assert unsupported != text
    with pytest.raises(InputError, match="no supported host-model"):
        parse_cpus(unsupported.encode(), "domcaps.xml")


def test_domain_yields_its_cpu() -> None:
    path = XML / "domain-skylake.xml"
    cpu = parse_cpu(path.read_bytes(), path.name)
    assert cpu.type is CpuType.GUEST
    assert (cpu.mode, cpu.match, cpu.check) == (Mode.CUSTOM, Match.EXACT, Check.PARTIAL)
    assert (cpu.model, cpu.fallback, cpu.vendor_id, cpu.vendor) == (
        "Skylake-Client-IBRS",
        Fallback.FORBID,
        "GenuineIntel",
        "Intel",
    )
    assert cpu.topology == Topology(sockets=1, cores=4, threads=2, dies=1, clusters=1)
    assert cpu.features == (
        FeatureRequest("ss", Policy.REQUIRE),
        FeatureRequest("tsc_adjust", Policy.REQUIRE),
        FeatureRequest("clflushopt", Policy.OPTIONAL),
        FeatureRequest("hle", Policy.DISABLE),
        FeatureRequest("rtm", Policy.DISABLE),
        FeatureRequest("avx512f", Policy.FORBID),
        FeatureRequest("hypervisor", Policy.FORCE),
    )
    assert cpu.extra_xml == ('<cache mode="passthrough"/>', '<maxphysaddr mode="passthrough" limit="39"/>')


def _cpu_element_text(path: Path) -> str:
    """The <cpu>...</cpu> element of a fixture, dedented as libvirt formats it standalone."""
    text = path.read_text()
    start = text.index("<cpu")
    line_start = text.rindex("\n", 0, start) + 1
    end = text.index("</cpu>", start) + len("</cpu>")
    return textwrap.dedent(text[line_start:end]) + "\n"


@pytest.mark.parametrize("name", ["domain-skylake.xml", "domain-host-passthrough.xml"])
def test_domain_cpu_formats_as_libvirt_does(name: str) -> None:
    cpu = parse_cpu((XML / name).read_bytes(), name)
    assert format_cpu(cpu) == _cpu_element_text(XML / name)


def test_host_passthrough_check_and_migratable_survive() -> None:
    path = XML / "domain-host-passthrough.xml"
    cpu = parse_cpu(path.read_bytes(), path.name)
    assert (cpu.mode, cpu.check, cpu.migratable, cpu.model, cpu.match) == (
        Mode.HOST_PASSTHROUGH,
        Check.NONE,
        "on",
        None,
        None,
    )
    assert roundtrip(cpu) == cpu
    text = format_cpu(cpu)
    assert text.startswith("<cpu mode='host-passthrough' check='none' migratable='on'>")


def test_capabilities_cpu_formats_in_libvirt_order() -> None:
    path = XML / "capabilities-core-i7-7700.xml"
    cpu = parse_cpu(path.read_bytes(), path.name)
    assert format_cpu(cpu) == _cpu_element_text(path)


@pytest.mark.parametrize(
    "cpu",
    [
        CpuDefinition(
            mode=Mode.CUSTOM,
            match=Match.MINIMUM,
            check=Check.FULL,
            model="EPYC-Rome",
            fallback=Fallback.ALLOW,
            vendor_id="AuthenticAMD",
            vendor="AMD",
            topology=Topology(sockets=2, cores=8, threads=2, dies=2, clusters=None),
            features=(FeatureRequest("xsaves", Policy.DISABLE), FeatureRequest("vaes", Policy.FORCE)),
            extra_xml=("<cache level=\"3\" mode=\"emulate\"/>", "<maxphysaddr mode=\"emulate\" bits=\"42\"/>"),
        ),
        CpuDefinition(mode=Mode.MAXIMUM, migratable="off", check=Check.NONE),
        CpuDefinition(mode=Mode.HOST_MODEL, check=Check.PARTIAL, features=(FeatureRequest("pcid", Policy.REQUIRE),)),
        CpuDefinition(mode=Mode.CUSTOM, topology=Topology(sockets=1, cores=4, threads=1)),
        CpuDefinition(
            type=CpuType.HOST,
            arch="x86_64",
            model="Haswell-v2",
            vendor="Intel",
            microcode="0x28",
            signature=(6, 60, 3),
            topology=Topology(sockets=1, cores=4, threads=2, dies=1, clusters=1),
            features=(FeatureRequest("vmx"), FeatureRequest("invtsc")),
        ),
    ],
    ids=["custom-full", "maximum", "host-model", "topology-only", "host"],
)
def test_constructed_cpus_round_trip(cpu: CpuDefinition) -> None:
    again = roundtrip(cpu)
    assert again == cpu
    assert again.extra_xml == cpu.extra_xml


# -- several <cpu> in one file (virsh cpu-baseline input) ------------------------------


def _two_hosts() -> tuple[str, str]:
    return (
        (CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-host.xml").read_text(),
        (CPUTESTDATA / "x86_64-cpuid-Core-i5-4670T-host.xml").read_text(),
    )


def test_cpus_one_after_another() -> None:
    a, b = _two_hosts()
    cpus = parse_cpus((a + b).encode(), "two")
    assert [c.model for c in cpus] == ["Skylake-Client-v1", "Haswell-v2"]
    assert parse_cpus((a + "\n<!-- next host -->\n" + b + a).encode(), "three")[2] == cpus[0]
    fixture = parse_cpus((XML / "two-intel-hosts.xml").read_bytes(), "fixture")
    assert fixture == cpus


def test_cpu_test_wrapper_holds_several_cpus() -> None:
    cpus = parse_cpus((CPUTESTDATA / "x86_64-baseline-Westmere+Nehalem.xml").read_bytes(), "wm+nh")
    assert [c.model for c in cpus] == ["Westmere", "Nehalem"]
    assert all(c.type is CpuType.HOST for c in cpus)


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(
            "<!-- hosts of rack 12 -->\n",
            id="leading-comment",
        ),
        pytest.param(
            "<?xml version='1.0' encoding='UTF-8'?>\n",
            id="leading-xml-declaration",
        ),
    ],
)
def test_cpus_one_after_another_with_prolog(prefix: str) -> None:
    a, b = _two_hosts()
    cpus = parse_cpus((prefix + a + b).encode(), "two")
    assert [c.model for c in cpus] == ["Skylake-Client-v1", "Haswell-v2"]


# -- parser defaults and refusals ------------------------------------------------------


def test_guest_defaults_are_made_explicit_as_libvirt_writes_them() -> None:
    cpu = parse_cpu(b"<cpu><model>Penryn</model><feature name='vmx'/></cpu>", "bare")
    assert (cpu.type, cpu.mode, cpu.match, cpu.fallback) == (CpuType.GUEST, Mode.CUSTOM, Match.EXACT, Fallback.ALLOW)
    assert cpu.features == (FeatureRequest("vmx", Policy.REQUIRE),)
    assert format_cpu(cpu) == (
        "<cpu mode='custom' match='exact'>\n"
        "  <model fallback='allow'>Penryn</model>\n"
        "  <feature policy='require' name='vmx'/>\n"
        "</cpu>\n"
    )


def test_host_cpu_features_have_no_policy() -> None:
    cpu = parse_cpu(b"<cpu><arch>x86_64</arch><model>Penryn</model><feature name='vmx' policy='disable'/></cpu>", "h")
    assert cpu.type is CpuType.HOST
    assert cpu.features == (FeatureRequest("vmx", None),)
    assert "policy" not in format_cpu(cpu)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<cpu match='exact'><arch>x86_64</arch><model>Penryn</model></cpu>", "match"),
        (b"<cpu><model vendor_id='Intel'>Penryn</model></cpu>", "vendor_id"),
        (b"<cpu><model>Penryn</model><vendor></vendor></cpu>", "<vendor> is empty"),
        (b"<cpu><vendor>Intel</vendor></cpu>", "needs a <model>"),
        (b"<cpu><model>Penryn</model><feature policy='require'/></cpu>", "no name"),
        (b"<cpu><model>Penryn</model><topology sockets='two' cores='1' threads='1'/></cpu>", "not a number"),
        (b"<cpu check='sometimes'><model>Penryn</model></cpu>", "CPU check 'sometimes'"),
        (b"<cpu mode='host-ish'/>", "CPU mode 'host-ish'"),
        (b"<cpu><model fallback='maybe'>Penryn</model></cpu>", "model fallback 'maybe'"),
    ],
)
def test_invalid_cpu_elements_are_refused(xml: bytes, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_cpus(xml, "bad.xml")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<cpudata arch='x86'><cpuid ecx_in='0x0' eax='0x0'/></cpudata>", "no eax_in"),
        (b"<cpudata arch='x86'><msr edx='0x0' eax='0x0'/></cpudata>", "no index"),
        (b"<cpudata arch='x86'><leaf/></cpudata>", "unexpected <leaf>"),
        (b"<cpudata arch='s390'><cpuid eax_in='0x0'/></cpudata>", "'s390'"),
        (b"<cpu><model>Penryn</model></cpu>", "expected <cpudata"),
    ],
)
def test_invalid_cpudata_is_refused(xml: bytes, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse_cpudata(xml, "bad.xml")
