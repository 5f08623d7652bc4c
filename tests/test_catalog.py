"""The catalog: integrity of the built-in data, admin drop-ins, and engine properties.

The property tests draw random subsets of real CPUs' features (libvirt's CPUID dumps)
and check the engine's promises: a baseline runs everywhere it was computed for, it
does not depend on input order, and decoding loses or invents no feature.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from guestcpu.catalog.catalog import Catalog, normalize_feature_name
from guestcpu.catalog.loader import apply_dropins, default_dropin_dirs, load_catalog
from guestcpu.engine.baseline import baseline
from guestcpu.engine.compare import CompareResult, compare
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.engine.decode import CpuFacts, decode, facts_from_cpuid
from guestcpu.errors import GuestCpuError, InputError, UnknownNameError
from guestcpu.formats.libvirt_xml import parse_cpudata
from guestcpu.model.cpu import CpuDefinition, CpuType, Fallback, FeatureRequest, Match, Mode, Policy
from guestcpu.model.features import iter_bits

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"

CATALOG = load_catalog(dropin_dirs=[])


@pytest.fixture(autouse=True)
def isolated_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("guestcpu.catalog.paths.SYSTEM_DROPIN_DIR", tmp_path / "no-etc")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-xdg"))


def facts_of(dump: str) -> CpuFacts:
    path = CPUTESTDATA / f"x86_64-cpuid-{dump}.xml"
    return facts_from_cpuid(parse_cpudata(path.read_bytes(), path.name), CATALOG)


def bit(name: str, catalog: Catalog = CATALOG) -> int:
    return 1 << catalog.feature(name).index


# -- integrity -------------------------------------------------------------------------


def test_counts() -> None:
    # libvirt 11.3's cpu_map (364 features, 150 models) plus what only QEMU 10 defines
    assert len(CATALOG.features) == 374
    assert len(CATALOG.models) == 156
    assert len({f.name for f in CATALOG.features}) == 374
    assert len({m.name for m in CATALOG.models}) == 156
    assert CATALOG.source == "built-in"
    assert [v.name for v in CATALOG.vendors] == ["Intel", "AMD", "Hygon", "Zhaoxin"]


def test_feature_indices_and_locations() -> None:
    assert [f.index for f in CATALOG.features] == list(range(374))
    seen: dict[tuple[str, int, int, str, int], str] = {}
    for f in CATALOG.features:
        assert f.kind in ("cpuid", "msr")
        assert 0 <= f.bit < (64 if f.kind == "msr" else 32)
        assert f.register == "msr" if f.kind == "msr" else f.register in ("eax", "ebx", "ecx", "edx")
        key = (f.kind, f.leaf, f.subleaf, f.register, f.bit)
        assert key not in seen, f"{f.name} and {seen[key]} share {f.location}"
        seen[key] = f.name
    assert CATALOG.feature("sse4.1").location == "CPUID 0x1 ECX[19]"
    assert CATALOG.feature("avx512f").location == "CPUID 0x7 EBX[16]"
    assert CATALOG.feature("invtsc").location == "CPUID 0x80000007 EDX[8]"
    assert CATALOG.feature("rdctl-no").location == "MSR 0x10a bit 0"
    # named by QEMU 10 only: bits found by starting QEMU with -cpu base,+NAME
    assert CATALOG.feature("ace2").location == "CPUID 0xc0000001 EDX[8]"
    assert CATALOG.feature("bhi-no").location == "MSR 0x10a bit 20"


def test_migratable_flags() -> None:
    assert sorted(f.name for f in CATALOG.features if not f.migratable) == ["invtsc", "xsaves"]
    assert CATALOG.migratable_bits == CATALOG.all_bits & ~(bit("invtsc") | bit("xsaves"))


def test_every_alias_target_exists_and_is_canonical() -> None:
    aliases = [m for m in CATALOG.models if m.alias_of]
    assert len(aliases) == 61  # 59 of libvirt's cpu_map, YongFeng and ClearwaterForest of QEMU 10
    for alias in aliases:
        target = CATALOG.model(alias.alias_of or "")
        assert target.alias_of is None, f"{alias.name} -> {target.name} -> {target.alias_of}"
        assert alias.canonical == target.name
        assert alias.features == target.features, alias.name
        assert alias.vendor == target.vendor
        assert alias.family == target.family
        assert alias.version == target.version


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("Skylake-Client", "Skylake-Client-v1"),
        ("Skylake-Client-IBRS", "Skylake-Client-v2"),
        ("Skylake-Client-noTSX-IBRS", "Skylake-Client-v3"),
        ("Haswell-noTSX", "Haswell-v2"),
        ("Haswell-noTSX-IBRS", "Haswell-v4"),
        ("Cascadelake-Server-noTSX", "Cascadelake-Server-v3"),
        ("Icelake-Server-noTSX", "Icelake-Server-v2"),
        ("EPYC-IBPB", "EPYC-v2"),
        ("EPYC-Rome", "EPYC-Rome-v1"),
        ("Dhyana", "Dhyana-v1"),
        ("486", "486-v1"),
    ],
)
def test_known_aliases(alias: str, target: str) -> None:
    assert CATALOG.model(alias).alias_of == target
    assert alias in CATALOG.aliases_of(target)


def test_every_model_uses_catalog_features_and_vendors() -> None:
    vendors = {v.name for v in CATALOG.vendors}
    for m in CATALOG.models:
        assert m.features, m.name
        for bits in (m.features, m.removed, m.added):
            assert bits & ~CATALOG.all_bits == 0, m.name
            assert all(0 <= i < len(CATALOG.features) for i in iter_bits(bits))
        assert m.features & m.removed == 0, m.name
        assert m.vendor is None or m.vendor in vendors, m.name
        assert CATALOG.model(m.name) is m
        assert m.source == "built-in"


def test_model_features_are_real_names() -> None:
    sky = CATALOG.model("Skylake-Client-v1")
    assert {"avx2", "hle", "rtm", "xsavec", "sse4.2"} <= set(CATALOG.names(sky.features))
    assert CATALOG.names(sky.removed) == ["mpx"]
    assert "spec-ctrl" in CATALOG.names(CATALOG.model("Skylake-Client-v2").features)
    rome = CATALOG.model("EPYC-Rome-v4")
    assert rome.vendor == "AMD" and "xsaves" not in CATALOG.names(rome.features)


def test_versions_are_ordered() -> None:
    families = {m.family for m in CATALOG.models}
    versioned = 0
    for family in families:
        versions = CATALOG.versions(family)
        if not versions:
            continue
        versioned += 1
        assert [v.version for v in versions] == list(range(1, len(versions) + 1)), family
        assert [v.name for v in versions] == [f"{family}-v{i}" for i in range(1, len(versions) + 1)]
        orders = [v.order for v in versions]
        assert orders == sorted(orders) and len(set(orders)) == len(orders), family
        assert CATALOG.latest_version(family).name == versions[-1].name
    assert versioned >= 40
    assert [v.name for v in CATALOG.versions("Skylake-Client")] == [f"Skylake-Client-v{i}" for i in (1, 2, 3, 4)]
    assert CATALOG.latest_version("Skylake-Client-IBRS").name == "Skylake-Client-v4"
    # catalog order is decode order: models sorted by it, newest last
    assert [m.order for m in CATALOG.models] == sorted(m.order for m in CATALOG.models)
    assert CATALOG.model("Skylake-Client-v1").order < CATALOG.model("Cascadelake-Server-v1").order


def test_models_carry_qemu_facts() -> None:
    ident = CATALOG.model("Skylake-Client-v1").identity
    assert ident is not None
    assert (ident.vendor, ident.family, ident.model, ident.stepping) == ("GenuineIntel", 6, 94, 3)
    assert ident.model_id == "Intel Core Processor (Skylake)"
    assert (ident.level, ident.xlevel) == (0xD, 0x80000008)
    assert CATALOG.model("Skylake-Client-v4").defined_by_qemu("7.2")
    assert not CATALOG.model("GraniteRapids-v1").defined_by_qemu("7.2")
    assert CATALOG.model("GraniteRapids-v1").defined_by_qemu("8.1")
    assert CATALOG.model("Skylake-Client-v1").matches_signature(6, 94, 3)
    assert not CATALOG.model("Skylake-Client-v1").matches_signature(6, 60, 3)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("sse4_1", "sse4.1"),
        ("sse4-1", "sse4.1"),
        ("sse4.1", "sse4.1"),
        ("sse4_2", "sse4.2"),
        ("pclmulqdq", "pclmuldq"),
        ("pclmuldq", "pclmuldq"),
        ("lahf-lm", "lahf_lm"),
        ("lahf_lm", "lahf_lm"),
        ("sse3", "pni"),
        ("ds-cpl", "ds_cpl"),
        ("tsc-adjust", "tsc_adjust"),
        ("nrip_save", "nrip-save"),
        ("SSE4.1", "sse4.1"),
    ],
)
def test_qemu_spellings_resolve(spelling: str, name: str) -> None:
    assert CATALOG.feature(spelling).name == name
    assert CATALOG.has_feature(spelling)
    assert CATALOG.bits([spelling]) == bit(name)


def test_every_qemu_spelling_resolves_to_its_feature() -> None:
    for f in CATALOG.features:
        for spelling in (f.name, *f.qemu_names):
            assert CATALOG.feature(spelling) is f
            assert CATALOG.feature(normalize_feature_name(spelling)) is f


def test_unknown_names_suggest() -> None:
    with pytest.raises(UnknownNameError) as feature_error:
        CATALOG.feature("avx512ff")
    assert "avx512f" in feature_error.value.suggestions
    with pytest.raises(UnknownNameError) as model_error:
        CATALOG.model("Skylake-Clinet")
    assert model_error.value.suggestions[0] == "Skylake-Client"
    assert "did you mean 'Skylake-Client'" in str(model_error.value)
    assert not CATALOG.has_feature("no-such-feature")


# -- drop-ins --------------------------------------------------------------------------

FLEET_TOML = """\
# our fleet CPU
[[model]]
name = "FleetRome"
base = "EPYC-Rome-v4"
remove = ["xsaves"]
add = ["vaes"]
notes = "fleet CPU"
"""
FLEET_JSON = json.dumps(
    {"model": [
        {"name": "FleetRome", "base": "EPYC-Rome-v4", "remove": ["xsaves"], "add": ["vaes"], "notes": "fleet CPU"}
    ]}
)


def write_dropin(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture(params=["toml", "json"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Catalog, Path]:
    ext = request.param
    path = write_dropin(tmp_path / "models.d", f"fleet.{ext}", FLEET_TOML if ext == "toml" else FLEET_JSON)
    return apply_dropins(CATALOG, [path.parent]), path


def rome_with_vaes(catalog: Catalog) -> CpuFacts:
    facts = facts_of("EPYC-7502-32-Core")
    return CpuFacts(facts.features | bit("vaes", catalog), facts.vendor, facts.signature_eax)


def test_dropin_defines_the_fleet_model(fleet: tuple[Catalog, Path]) -> None:
    catalog, path = fleet
    model = catalog.model("FleetRome")
    base = CATALOG.model("EPYC-Rome-v4")
    assert model.features == (base.features & ~bit("xsaves")) | bit("vaes")
    assert (model.vendor, model.signatures, model.identity) == (base.vendor, base.signatures, base.identity)
    assert model.source == str(path)
    assert model.notes == "fleet CPU"
    assert model.alias_of is None
    assert model.order > max(m.order for m in CATALOG.models)
    assert len(catalog.models) == 157
    assert catalog.source == "built-in+drop-ins"
    # the built-ins are untouched
    assert catalog.model("EPYC-Rome-v4") == base


def test_dropin_model_in_decode(fleet: tuple[Catalog, Path]) -> None:
    catalog, _ = fleet
    facts = rome_with_vaes(catalog)
    host = decode(facts, catalog, CpuType.HOST)
    assert host.model.name == "FleetRome"
    assert "vaes" not in host.required
    guest = decode(facts, catalog, CpuType.GUEST)
    assert guest.model.name == "FleetRome" and guest.disabled == []
    # without the drop-in, the same CPU is an EPYC-Rome that needs vaes on top
    plain = decode(facts, CATALOG, CpuType.HOST)
    assert plain.model.family == "EPYC-Rome" and "vaes" in plain.required


def test_dropin_model_in_compare(fleet: tuple[Catalog, Path]) -> None:
    catalog, _ = fleet
    guest = CpuDefinition(mode=Mode.CUSTOM, match=Match.EXACT, model="FleetRome", fallback=Fallback.FORBID)
    real_rome = decode(facts_of("EPYC-7502-32-Core"), catalog, CpuType.HOST).cpu
    verdict = compare(real_rome, guest, catalog)
    assert verdict.result is CompareResult.INCOMPATIBLE
    assert verdict.missing_features == ["vaes"]
    with_vaes = decode(rome_with_vaes(catalog), catalog, CpuType.HOST).cpu
    assert compare(with_vaes, guest, catalog).result is CompareResult.SUPERSET
    assert compare(with_vaes.with_(features=()), guest, catalog).result is CompareResult.IDENTICAL
    with pytest.raises(UnknownNameError):
        compare(with_vaes, guest, CATALOG)


def test_dropin_model_in_baseline(fleet: tuple[Catalog, Path]) -> None:
    catalog, _ = fleet
    a = CpuDefinition(type=CpuType.HOST, arch="x86_64", model="FleetRome", vendor="AMD",
                      features=(FeatureRequest("avx512f"), FeatureRequest("invtsc")))
    b = CpuDefinition(type=CpuType.HOST, arch="x86_64", model="FleetRome", vendor="AMD",
                      features=(FeatureRequest("invtsc"), FeatureRequest("topoext")))
    result = baseline([a, b], catalog)
    assert result.cpu.model == "FleetRome"
    assert result.cpu.fallback is Fallback.FORBID
    assert [f.name for f in result.cpu.features] == ["invtsc"]
    assert sorted(result.dropped_features) == ["avx512f", "topoext"]
    restricted = baseline([a, b], catalog, models={"FleetRome": ()})
    assert restricted.cpu.model == "FleetRome"


def test_override_keeps_decode_order(tmp_path: Path) -> None:
    write_dropin(tmp_path / "d", "rome.toml", '[[model]]\nname = "EPYC-Rome-v3"\nbase = "EPYC-Rome-v3"\n'
                 'remove = ["xsaves"]\nnotes = "no xsaves here"\n')
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    builtin = CATALOG.model("EPYC-Rome-v3")
    override = catalog.model("EPYC-Rome-v3")
    assert override.order == builtin.order
    assert override.version == 3 and override.family == "EPYC-Rome"
    assert override.features == builtin.features & ~bit("xsaves")
    assert override.source.endswith("rome.toml") and override.notes == "no xsaves here"
    assert [m.name for m in catalog.models] == [m.name for m in CATALOG.models]
    assert [v.name for v in catalog.versions("EPYC-Rome")] == [f"EPYC-Rome-v{i}" for i in (1, 2, 3, 4)]
    # the engine uses the override: the EPYC 7502 (which has xsaves) now fits v2 better than v3
    rome = facts_of("EPYC-7502-32-Core")
    assert decode(rome, CATALOG, CpuType.HOST).model.name == "EPYC-Rome-v3"
    assert decode(rome, catalog, CpuType.HOST).model.name == "EPYC-Rome-v2"


def test_override_tie_is_decided_by_the_builtin_order(tmp_path: Path) -> None:
    # v1 made identical to v3: on a tie the newer model wins, so v3 must still win --
    # it would not if the override had moved to the end of the decode order.
    write_dropin(tmp_path / "d", "rome.toml", '[[model]]\nname = "EPYC-Rome-v1"\nbase = "EPYC-Rome-v3"\n')
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    assert catalog.model("EPYC-Rome-v1").features == catalog.model("EPYC-Rome-v3").features
    assert catalog.model("EPYC-Rome-v1").order < catalog.model("EPYC-Rome-v3").order
    assert decode(facts_of("EPYC-7502-32-Core"), catalog, CpuType.HOST).model.name == "EPYC-Rome-v3"
    # a new drop-in model with the same features is the newest, and wins the tie
    write_dropin(tmp_path / "d", "zz-new.toml", '[[model]]\nname = "RomeClone"\nbase = "EPYC-Rome-v3"\n')
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    assert decode(facts_of("EPYC-7502-32-Core"), catalog, CpuType.HOST).model.name == "RomeClone"


def test_override_without_base_stays_in_its_family(tmp_path: Path) -> None:
    features = CATALOG.names(CATALOG.model("Skylake-Client-v1").features)
    write_dropin(tmp_path / "d", "sky.json", json.dumps(
        {"model": [{"name": "Skylake-Client-v1", "vendor": "Intel", "features": features}]}))
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    assert catalog.model("Skylake-Client-v1").order == CATALOG.model("Skylake-Client-v1").order
    assert [v.name for v in catalog.versions("Skylake-Client")] == [f"Skylake-Client-v{i}" for i in (1, 2, 3, 4)]


def test_full_feature_list_dropin(tmp_path: Path) -> None:
    write_dropin(tmp_path / "d", "lab.json", json.dumps({"model": [{
        "name": "LabBox",
        "vendor": "Intel",
        "features": ["fpu", "sse", "sse2", "lm", "nx", "syscall", "sse4_1", "lahf-lm"],
        "signatures": [{"family": 6, "model": 158}],
        "deprecated": True,
    }]}))
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    lab = catalog.model("LabBox")
    assert catalog.names(lab.features) == sorted(
        ["fpu", "sse", "sse2", "lm", "nx", "syscall", "sse4.1", "lahf_lm"], key=lambda n: catalog.feature(n).index
    )
    assert lab.deprecated and lab.vendor == "Intel" and lab.identity is None
    assert lab.matches_signature(6, 158, 9)
    assert decode(CpuFacts(lab.features, "Intel", 0x000906E9), catalog, CpuType.HOST).model.name == "LabBox"


def test_dropin_model_id(tmp_path: Path) -> None:
    write_dropin(tmp_path / "d", "a.toml", '[[model]]\nname = "FleetRome"\nbase = "EPYC-Rome-v2"\n'
                 'model_id = "ACME Fleet CPU"\n')
    model = apply_dropins(CATALOG, [tmp_path / "d"]).model("FleetRome")
    assert model.identity is not None and model.identity.model_id == "ACME Fleet CPU"
    assert model.identity.family == 23
    base = CATALOG.model("EPYC-Rome-v2").identity
    assert base is not None and base.model_id != "ACME Fleet CPU"


def test_dropin_model_id_is_never_silently_dropped(tmp_path: Path) -> None:
    assert CATALOG.model("cpu64-rhel6").identity is None
    write_dropin(tmp_path / "d", "a.toml", '[[model]]\nname = "FleetRome"\nbase = "cpu64-rhel6"\n'
                 'model_id = "ACME Fleet CPU"\n')
    try:
        model = apply_dropins(CATALOG, [tmp_path / "d"]).model("FleetRome")
    except InputError as exc:
        assert "model_id" in str(exc)
        return
    assert model.identity is not None and model.identity.model_id == "ACME Fleet CPU"


def test_files_apply_in_name_order_and_build_on_each_other(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write_dropin(d, "10-base.toml", FLEET_TOML)
    write_dropin(d, "20-derived.json", json.dumps({"model": [
        {"name": "FleetRome2", "base": "FleetRome", "add": ["avx512f"]},
        {"name": "FleetRome", "base": "EPYC-Rome-v4", "notes": "replaced"},
    ]}))
    catalog = apply_dropins(CATALOG, [d])
    assert catalog.model("FleetRome").notes == "replaced"
    assert "vaes" not in catalog.names(catalog.model("FleetRome").features)
    derived = catalog.model("FleetRome2")
    assert {"vaes", "avx512f"} <= set(catalog.names(derived.features))


def test_model_based_on_earlier_model_of_same_file(tmp_path: Path) -> None:
    write_dropin(tmp_path / "d", "fleet.toml", '[[model]]\nname = "FleetBase"\nbase = "EPYC-Rome-v4"\n\n'
                 '[[model]]\nname = "FleetDerived"\nbase = "FleetBase"\nadd = ["vaes"]\n')
    catalog = apply_dropins(CATALOG, [tmp_path / "d"])
    assert "vaes" in catalog.names(catalog.model("FleetDerived").features)


def test_system_then_user_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "guestcpu" / "models.d"
    xdg = tmp_path / "config"
    monkeypatch.setattr("guestcpu.catalog.paths.SYSTEM_DROPIN_DIR", system)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    user = xdg / "guestcpu" / "models.d"
    assert default_dropin_dirs() == [system, user]
    write_dropin(system, "fleet.toml", FLEET_TOML.replace("fleet CPU", "system"))
    write_dropin(system, "only-system.toml", '[[model]]\nname = "SysOnly"\nbase = "Haswell-v4"\n')
    write_dropin(user, "fleet.json", json.dumps({"model": [
        {"name": "FleetRome", "base": "EPYC-Rome-v4", "add": ["vaes", "avx512f"], "notes": "user"}]}))
    catalog = load_catalog()
    fleet = catalog.model("FleetRome")
    assert fleet.notes == "user" and fleet.source == str(user / "fleet.json")
    assert "avx512f" in catalog.names(fleet.features)
    assert catalog.model("SysOnly").source == str(system / "only-system.toml")
    # dropin_dirs=[] means none at all
    assert not load_catalog(dropin_dirs=[]).has_model("FleetRome")


def test_user_dir_defaults_to_home_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_dropin_dirs()[1] == tmp_path / ".config" / "guestcpu" / "models.d"


def test_bad_dropin_raises_input_error_naming_file(tmp_path: Path) -> None:
    path = write_dropin(tmp_path / "d", "fleet.toml", '[[model]]\nname = "X"\nbase = "EPYC-Rome-v4"\nadd = ["vaess"]\n')
    with pytest.raises(InputError, match=re.escape(str(path))):
        apply_dropins(CATALOG, [path.parent])
    # files of other types are ignored
    path.unlink()
    write_dropin(tmp_path / "d", "README.md", "not a model file")
    assert apply_dropins(CATALOG, [tmp_path / "d"]) is CATALOG


# -- engine properties on random subsets of real CPUs ----------------------------------

INTEL_DUMPS = ["Core-i7-7700", "Core-i5-4670T", "Xeon-Gold-6148", "Core-i7-2600", "Xeon-E5-2650-v4",
               "Atom-P5362", "Core2-E6850", "Ice-Lake-Server", "Core-i7-4510U"]
AMD_DUMPS = ["EPYC-7502-32-Core", "Ryzen-7-1800X-Eight-Core", "Opteron-6282", "A10-5800K", "Phenom-B95"]
FACTS = {name: facts_of(name) for name in INTEL_DUMPS + AMD_DUMPS}
TSX = bit("hle") | bit("rtm")

PROPERTY_SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cpu_facts(draw: st.DrawFn, dumps: list[str]) -> CpuFacts:
    """A real CPU with up to 30 of its features taken away."""
    facts = FACTS[draw(st.sampled_from(dumps))]
    bits = list(iter_bits(facts.features))
    removed = draw(st.sets(st.sampled_from(bits), max_size=30))
    features = facts.features
    for i in removed:
        features &= ~(1 << i)
    return CpuFacts(features, facts.vendor, facts.signature_eax)


def host_cpu(facts: CpuFacts) -> CpuDefinition:
    try:
        return decode(facts, CATALOG, CpuType.HOST).cpu
    except GuestCpuError:
        reject()


vendor_group = st.sampled_from([INTEL_DUMPS, AMD_DUMPS])


@PROPERTY_SETTINGS
@given(data=st.data())
def test_baseline_runs_on_every_input(data: st.DataObject) -> None:
    group = data.draw(vendor_group)
    a = host_cpu(data.draw(cpu_facts(group)))
    b = host_cpu(data.draw(cpu_facts(group)))
    expand = data.draw(st.booleans())
    migratable = data.draw(st.booleans())
    result = baseline([a, b], CATALOG, expand=expand, migratable=migratable)
    for host in (a, b):
        verdict = compare(host, result.cpu, CATALOG)
        assert verdict.result is not CompareResult.INCOMPATIBLE, verdict.reason


@PROPERTY_SETTINGS
@given(data=st.data())
def test_baseline_is_commutative(data: st.DataObject) -> None:
    group = data.draw(vendor_group)
    a = host_cpu(data.draw(cpu_facts(group)))
    b = host_cpu(data.draw(cpu_facts(group)))
    ab = baseline([a, b], CATALOG)
    ba = baseline([b, a], CATALOG)
    ab_bits = compile_cpu(ab.cpu, CATALOG).all
    assert ab_bits == compile_cpu(ba.cpu, CATALOG).all
    # and it is exactly what the two CPUs have in common
    assert ab_bits == compile_cpu(a, CATALOG).all & compile_cpu(b, CATALOG).all
    assert sorted(ab.dropped_features) == sorted(ba.dropped_features)


@PROPERTY_SETTINGS
@given(facts=cpu_facts(INTEL_DUMPS + AMD_DUMPS))
def test_host_decode_is_exact(facts: CpuFacts) -> None:
    try:
        result = decode(facts, CATALOG, CpuType.HOST)
    except GuestCpuError:
        reject()
    expected = facts.features & ~TSX if result.tsx_dropped else facts.features
    assert result.disabled == []
    assert all(f.policy is None for f in result.cpu.features)
    assert result.model.features & ~expected == 0
    assert result.model.features | CATALOG.bits(result.required) == expected
    assert compile_cpu(result.cpu, CATALOG).all == expected


@PROPERTY_SETTINGS
@given(facts=cpu_facts(INTEL_DUMPS + AMD_DUMPS))
def test_guest_decode_is_exact_and_identical_to_host(facts: CpuFacts) -> None:
    result = decode(facts, CATALOG, CpuType.GUEST)
    expected = facts.features & ~TSX if result.tsx_dropped else facts.features
    required = CATALOG.bits(result.required)
    disabled = CATALOG.bits(result.disabled)
    assert (result.model.features | required) & ~disabled == expected
    assert all(f.policy in (Policy.REQUIRE, Policy.DISABLE) for f in result.cpu.features)
    try:
        host = decode(facts, CATALOG, CpuType.HOST).cpu
    except GuestCpuError:
        return
    assert compare(host, result.cpu, CATALOG).result is CompareResult.IDENTICAL
