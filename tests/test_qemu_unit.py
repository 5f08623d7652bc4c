"""The QEMU backend's pure logic on recorded QEMU 7.2 replies (fast; no QEMU started).

Every behaviour tested here is also tested against the live binary in
``test_qemu_live.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.compare import CompareResult
from guestcpu.errors import InputError, UnknownNameError
from guestcpu.formats.libvirt_xml import parse_cpu
from guestcpu.qemu import cache as cache_mod
from guestcpu.qemu.caps import (
    RESOLVE_LATEST,
    RESOLVE_LEGACY,
    RESOLVE_V1,
    QemuCaps,
    caps_from_document,
    caps_from_replies,
    machine_resolution,
    to_document,
)
from guestcpu.qemu.hypervisor import (
    NotExpressibleError,
    effective_cpu,
    expansion_bits,
    host_model,
    hypervisor_baseline,
    hypervisor_compare,
    offered_bits,
)
from guestcpu.qemu.s390x import ModelSpec, baseline_from_reply, comparison_from_reply, parse_model_spec

DATA = Path(__file__).parent / "data" / "qemu-7.2"
CPUTESTDATA = Path(__file__).parent / "data" / "libvirt-11.3" / "cputestdata"


def reply(name: str) -> Any:
    doc = json.loads((DATA / name).read_text())
    return doc["return"] if isinstance(doc, dict) and "return" in doc else doc


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


@pytest.fixture(scope="module")
def tcg() -> QemuCaps:
    return caps_from_document(json.loads((DATA / "caps-tcg.json").read_text()), "caps-tcg.json")


@pytest.fixture(scope="module")
def kvm() -> QemuCaps:
    return caps_from_document(json.loads((DATA / "caps-kvm.json").read_text()), "caps-kvm.json")


def recorded_caps(accel: str) -> QemuCaps:
    host = "host" if accel == "kvm" else "max"
    models = ["Skylake-Client", "Skylake-Client-v4", "qemu64", "EPYC-Milan-v1"]
    return caps_from_replies(
        arch="x86_64",
        accel=accel,
        binary="/usr/bin/qemu-system-x86_64",
        version=reply("query-version-tcg.json"),
        machines=reply("query-machines-tcg.json"),
        definitions=reply(f"query-cpu-definitions-{accel}.json"),
        host_static=reply(f"expansion-{accel}-static-{host}.json"),
        host_full=reply("expansion-kvm-full-host.json") if accel == "kvm" else reply("expansion-tcg-full-max.json"),
        host_static_nonmigratable=None,
        model_expansions={m: reply(f"expansion-{accel}-static-{m}.json") for m in models},
    )


# -- capabilities from replies ----------------------------------------------------------
@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_definitions_usable_and_blockers_equal_qemus(accel: str) -> None:
    caps = recorded_caps(accel)
    raw = reply(f"query-cpu-definitions-{accel}.json")
    assert len(caps.models) == len(raw) == 132
    for entry in raw:
        model = caps.model(entry["name"])
        assert model is not None
        assert model.blockers == tuple(dict.fromkeys(entry["unavailable-features"]))
        assert model.usable == (not entry["unavailable-features"])
        assert model.alias_of == entry.get("alias-of")
    usable = sum(m.usable for m in caps.models)
    assert usable == (38 if accel == "tcg" else 11)


def test_kvm_blockers_are_deduplicated() -> None:
    caps = recorded_caps("kvm")
    raw = {e["name"]: e["unavailable-features"] for e in reply("query-cpu-definitions-kvm.json")}
    duplicated = [n for n, b in raw.items() if len(b) != len(set(b))]
    assert duplicated, "the recorded KVM reply has duplicate blockers (XSAVE components)"
    for name in duplicated:
        blockers = caps.model(name).blockers  # type: ignore[union-attr]
        assert len(blockers) == len(set(blockers)) == len(set(raw[name]))


def test_version_and_machines() -> None:
    caps = recorded_caps("tcg")
    assert caps.qemu_version == "7.2.22"
    assert caps.package.startswith("Debian")
    default = caps.default_machine()
    assert default is not None and default.name == "pc-i440fx-7.2" and default.alias == "pc"
    assert default.default_cpu == "qemu64"
    assert caps.machine("q35").name == "pc-q35-7.2"  # type: ignore[union-attr]
    assert caps.machine("isapc").default_cpu == "486"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("machine", "rule"),
    [("none", RESOLVE_V1), ("pc-i440fx-7.2", RESOLVE_V1), ("pc-q35-4.1", RESOLVE_V1), ("pc-i440fx-4.0", RESOLVE_LEGACY),
     ("pc-q35-4.0.1", RESOLVE_LEGACY), ("pc-i440fx-2.12", RESOLVE_LEGACY), ("isapc", RESOLVE_LEGACY),
     ("microvm", RESOLVE_LATEST), ("q35", RESOLVE_V1)],
)
def test_machine_resolution_rule(machine: str, rule: str) -> None:
    assert machine_resolution(machine) == rule


def test_latest_resolution_equals_qemus_microvm_answer() -> None:
    caps = recorded_caps("tcg")
    microvm = reply("query-cpu-definitions-machine-microvm-tcg.json")
    checked = 0
    for entry in microvm:
        if "alias-of" in entry:
            assert caps.resolve(entry["name"], "microvm")[0] == entry["alias-of"], entry["name"]
            checked += 1
    assert checked == 55
    assert caps.resolve("Skylake-Client", "microvm") == ("Skylake-Client-v4", "latest")
    assert caps.resolve("Skylake-Client-IBRS", "microvm") == ("Skylake-Client-v2", "alias")
    assert caps.resolve("Skylake-Client", "pc") == ("Skylake-Client-v1", "v1")


def test_legacy_machines_have_no_alias_of() -> None:
    legacy = reply("query-cpu-definitions-machine-pc-i440fx-4.0-tcg.json")
    assert not any("alias-of" in e for e in legacy)
    caps = recorded_caps("tcg")
    assert caps.resolve("Skylake-Client", "pc-i440fx-4.0") == ("Skylake-Client-v1", "legacy")


def test_non_migratable_delta_is_invtsc() -> None:
    caps = caps_from_replies(
        arch="x86_64", accel="kvm", binary="q", version=reply("query-version-tcg.json"), machines=None,
        definitions=[], host_static=reply("expansion-kvm-full-host.json"), host_full=None,
        host_static_nonmigratable=reply("expansion-kvm-full-host-migratable-false.json"), model_expansions={},
    )
    assert caps.non_migratable == ("invtsc",)


def test_document_round_trip(tcg: QemuCaps) -> None:
    doc = to_document(tcg)
    again = caps_from_document(json.loads(json.dumps(doc)))
    assert again == tcg
    assert again.model("Skylake-Client-v4") == tcg.model("Skylake-Client-v4")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"schema": "other"}, "not a guestcpu QEMU capabilities document"),
        ({"schema": "guestcpu/qemu-caps", "schema_version": 99}, "schema version 99"),
        ({"schema": "guestcpu/qemu-caps", "schema_version": 1, "arch": "x86_64"}, "is damaged"),
        ([1, 2], "not a guestcpu QEMU capabilities document"),
    ],
)
def test_bad_documents(doc: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        caps_from_document(doc, "caps.json")


# -- host-model ---------------------------------------------------------------------------
def test_host_model_under_tcg_comes_from_max(tcg: QemuCaps, catalog: Catalog) -> None:
    result = host_model(tcg, catalog)
    offer = offered_bits(tcg, catalog, migratable=True)
    assert result.cpu.model in tcg.model_names()
    required = catalog.bits(result.required)
    assert required & ~offer == 0
    assert result.cpu.vendor == "AMD"  # max under TCG is AuthenticAMD


def test_host_model_under_kvm_only_offers_what_kvm_has(kvm: QemuCaps, catalog: Catalog) -> None:
    result = host_model(kvm, catalog)
    assert result.cpu.vendor == "Intel"
    assert "pni" not in result.required
    assert "invtsc" not in result.required  # non-migratable
    with_invtsc = host_model(kvm, catalog, migratable=False)
    assert "invtsc" in [f.name for f in with_invtsc.cpu.features] or "invtsc" in with_invtsc.required


# -- effective CPU (what compare and baseline judge) -------------------------------------------------------------
def guest(xml: str) -> Any:
    return parse_cpu(xml.encode(), "guest.xml")


def test_cmdline_resolves_alias_and_pins_vendor_under_kvm(kvm: QemuCaps, catalog: Catalog) -> None:
    eff = effective_cpu(guest("<cpu mode='custom'><model>Skylake-Client</model></cpu>"), kvm, catalog)
    # a bare name means what define pins for a new definition: the newest version catalog and QEMU share
    assert eff.qemu_model == "Skylake-Client-v4" and eff.resolution == "latest-common"
    assert eff.vendor_string == "GenuineIntel"


def test_cmdline_microvm_resolves_latest(tcg: QemuCaps, catalog: Catalog) -> None:
    eff = effective_cpu(guest("<cpu><model>Skylake-Client</model></cpu>"), tcg, catalog, machine="microvm")
    assert eff.qemu_model == "Skylake-Client-v4"


def test_cmdline_explicit_deviations(tcg: QemuCaps, catalog: Catalog) -> None:
    xml = """<cpu mode='custom' match='exact'><model>Skylake-Client-v4</model>
      <feature policy='require' name='avx512f'/><feature policy='disable' name='x2apic'/>
      <feature policy='require' name='pclmuldq'/><feature policy='forbid' name='pcid'/></cpu>"""
    eff = effective_cpu(guest(xml), tcg, catalog)
    assert set(catalog.names(eff.named)) == {"pclmuldq", "avx512f", "pcid", "x2apic"}
    names = catalog.names(eff.features)
    assert "avx512f" in names and "x2apic" not in names and "pcid" not in names
    # QEMU's own expansion is the base: under TCG it lacks vme, which the catalog's definition has
    assert "vme" not in names
    assert any("lacks vme" in n for n in eff.notes)


def test_explicit_cpu_compiles_to_the_effective_features(kvm: QemuCaps, catalog: Catalog) -> None:
    from guestcpu.engine.cpubits import compile_cpu

    for name in ("Skylake-Client", "EPYC-Milan-v1", "qemu64", "Cascadelake-Server-v5", "Denverton"):
        eff = effective_cpu(guest(f"<cpu><model>{name}</model><feature policy='require' name='avx2'/></cpu>"),
                            kvm, catalog)
        assert compile_cpu(eff.cpu, catalog).all == eff.features, name


@pytest.mark.parametrize("name", ["cpu64-rhel6", "EPYC-Genoa"])
def test_a_model_this_qemu_lacks_is_judged_as_define_pins_it(name: str, tcg: QemuCaps, catalog: Catalog) -> None:
    """fallback='allow' (the default): the closest model this QEMU has, said in a note; 'forbid': refused."""
    assert not tcg.has_model(name)
    eff = effective_cpu(guest(f"<cpu><model>{name}</model></cpu>"), tcg, catalog)
    assert tcg.has_model(eff.qemu_model)
    assert any(f"has no {name}; fallback='allow' chose" in n for n in eff.notes)
    with pytest.raises(NotExpressibleError, match="fallback='forbid'"):
        effective_cpu(guest(f"<cpu><model fallback='forbid'>{name}</model></cpu>"), tcg, catalog)


def test_unknown_model_suggests_names(tcg: QemuCaps, catalog: Catalog) -> None:
    with pytest.raises(UnknownNameError, match="Skylake-Client"):
        effective_cpu(guest("<cpu><model>Skylake-Clent</model></cpu>"), tcg, catalog)


# -- hypervisor compare / baseline ------------------------------------------------------------
def test_hypervisor_compare_names_qemus_blockers(kvm: QemuCaps, catalog: Catalog) -> None:
    result = hypervisor_compare(guest("<cpu><model>Skylake-Client-v4</model></cpu>"), kvm, catalog)
    assert result.result is CompareResult.INCOMPATIBLE
    qemu_blockers = [catalog.feature(b).name for b in kvm.model("Skylake-Client-v4").blockers]  # type: ignore[union-attr]
    assert sorted(result.comparison.missing_features) == sorted(qemu_blockers)
    assert "pni" in result.comparison.reason


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_hypervisor_compare_agrees_with_qemu_usability(accel: str, request: pytest.FixtureRequest,
                                                       catalog: Catalog) -> None:
    caps: QemuCaps = request.getfixturevalue(accel)
    for entry in caps.models:
        if entry.name in ("host", "max", "base") or not catalog.has_model(entry.name):
            continue
        result = hypervisor_compare(guest(f"<cpu><model>{entry.name}</model></cpu>"), caps, catalog)
        resolved = caps.model(result.effective.qemu_model)  # a bare name: the version define would pin
        assert resolved is not None
        assert (result.result is not CompareResult.INCOMPATIBLE) == resolved.usable, entry.name


BASELINE_PAIRS = [
    ("Core-i7-4600U", "Core-i5-6600"),
    ("Xeon-E5-2650-v4", "Xeon-Gold-6148"),
    ("EPYC-7502-32-Core", "Ryzen-7-1800X-Eight-Core"),
    ("Core-i5-2500", "Xeon-E5-2630-v3"),
]


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
@pytest.mark.parametrize("pair", BASELINE_PAIRS, ids=lambda p: "+".join(p))
def test_hypervisor_baseline_is_always_startable(accel: str, pair: tuple[str, str], request: pytest.FixtureRequest,
                                                 catalog: Catalog) -> None:
    caps: QemuCaps = request.getfixturevalue(accel)
    cpus = []
    for name in pair:
        path = CPUTESTDATA / f"x86_64-cpuid-{name}-host.xml"
        if not path.exists():
            pytest.skip(f"{path.name} not in the corpus")
        cpus.append(parse_cpu(path.read_bytes(), path.name))
    result = hypervisor_baseline(cpus, caps, catalog)
    offer = offered_bits(caps, catalog, migratable=True)
    assert result.features & ~offer == 0
    assert caps.model(result.qemu_model) is not None and "-v" in result.qemu_model
    judged = hypervisor_compare(result.cpu, caps, catalog)
    assert judged.result is not CompareResult.INCOMPATIBLE, judged.comparison.reason
    # QEMU's own additions it can give are kept explicitly
    qemu_bits, _ = expansion_bits(caps.model(result.qemu_model).expansion, catalog)  # type: ignore[union-attr]
    if qemu_bits & offer & (1 << catalog.feature("hypervisor").index):
        assert result.features >> catalog.feature("hypervisor").index & 1


# -- cache logic (probe replaced by recorded capabilities) -------------------------------------
@pytest.fixture()
def fake_probe(monkeypatch: pytest.MonkeyPatch, tcg: QemuCaps) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def probe(binary: str, accel: str, **kwargs: Any) -> QemuCaps:
        calls.append({"binary": binary, "accel": accel})
        return caps_from_document({**to_document(tcg), "fingerprint": dict(kwargs["fingerprint"])})

    monkeypatch.setattr(cache_mod, "probe", probe)
    return calls


def test_cache_hit_miss_and_invalidation(tmp_path: Path, fake_probe: list[dict[str, Any]]) -> None:
    facts = {"binary": "/usr/bin/qemu-system-x86_64", "size": 1, "mtime_ns": 1, "kernel": "6.1", "microcode": "0x1"}
    kw: dict[str, Any] = {"cache_dir": tmp_path, "facts": facts}
    assert cache_mod.load_caps(None, "tcg", **kw).status == "missing"
    assert cache_mod.load_caps(None, "tcg", **kw).status == "hit"
    assert len(fake_probe) == 1
    for key, value in (("microcode", "0x2"), ("kernel", "6.2"), ("mtime_ns", 2), ("size", 2)):
        facts = {**facts, key: value}
        result = cache_mod.load_caps(None, "tcg", cache_dir=tmp_path, facts=facts)
        assert result.status == f"changed: {key}"
    assert cache_mod.load_caps(None, "tcg", cache_dir=tmp_path, facts=facts, refresh=True).status == "refresh"
    assert len(fake_probe) == 6
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-schema"])
def test_corrupt_cache_is_reprobed_with_a_warning(tmp_path: Path, fake_probe: list[dict[str, Any]],
                                                  damage: str) -> None:
    facts = {"binary": "q", "kernel": "6.1"}
    first = cache_mod.load_caps(None, "tcg", cache_dir=tmp_path, facts=facts)
    data = first.path.read_bytes()
    first.path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff{{", "empty": b"",
                            "wrong-schema": b'{"schema": "x"}'}[damage])
    warnings: list[str] = []
    again = cache_mod.load_caps(None, "tcg", cache_dir=tmp_path, facts=facts, warn=warnings.append)
    assert again.status == "corrupt"
    assert len(warnings) == 1 and "corrupt" in warnings[0] and str(first.path) in warnings[0]
    assert cache_mod.load_caps(None, "tcg", cache_dir=tmp_path, facts=facts).status == "hit"


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_mod.default_cache_dir() == tmp_path / "guestcpu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = Path("/var/cache/guestcpu") if os.geteuid() == 0 else Path.home() / ".cache" / "guestcpu"
    assert cache_mod.default_cache_dir() == expected


def test_cpuinfo_facts() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmicrocode\t: 0x2b000571\nflags\t\t: fpu vme\n\nprocessor\t: 1\n"
    microcode, digest = cache_mod.cpuinfo_facts(text)
    assert microcode == "0x2b000571"
    assert digest != cache_mod.cpuinfo_facts(text.replace("fpu vme", "fpu"))[1]


def test_unwritable_cache_dir_is_one_clear_error(tmp_path: Path, fake_probe: list[dict[str, Any]]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(cache_mod.CacheError, match="cannot create the capabilities cache directory"):
        cache_mod.load_caps(None, "tcg", cache_dir=blocker / "sub", facts={"binary": "q"})


# -- s390x ------------------------------------------------------------------------------------
def test_s390x_model_specs() -> None:
    assert parse_model_spec("z14") == ModelSpec("z14", {})
    assert parse_model_spec("z14,vx=off,+msa8,-gs").props == {"vx": False, "msa8": True, "gs": False}
    assert parse_model_spec("z14,-vx").to_qmp() == {"name": "z14", "props": {"vx": False}}
    with pytest.raises(InputError, match="not a feature setting"):
        parse_model_spec("z14,vx=maybe")


def _spec(text: str) -> ModelSpec:
    return parse_model_spec(text.rstrip("?"))


def test_s390x_recorded_comparisons() -> None:
    for entry in json.loads((DATA / "s390x" / "comparisons.json").read_text()):
        if "return" not in entry["reply"]:
            continue
        result = comparison_from_reply(entry["reply"]["return"], _spec(entry["modela"]), _spec(entry["modelb"]))
        assert result.result == entry["reply"]["return"]["result"]
        assert list(result.responsible_properties) == entry["reply"]["return"]["responsible-properties"]


def test_s390x_recorded_baselines() -> None:
    entries = json.loads((DATA / "s390x" / "baselines.json").read_text())
    found = {(e["modela"], e["modelb"]): baseline_from_reply(e["reply"]["return"], []) for e in entries}
    assert found[("qemu", "max")].spec == "z800-base,etf2=on,ldisp=on"
    assert found[("z14", "z196")].name == "z196-base"
    assert "vx" not in found[("z14,-vx", "z14")].props
