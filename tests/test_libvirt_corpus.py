"""Every x86 case of libvirt 11.3's tests/cputest.c, run through guestcpu.

The cases come from ``cputest_manifest.json``; inputs and libvirt's expected answers
are libvirt's own files (tests/data/README.md).  Where guestcpu deliberately answers
differently, the case is listed in ``KNOWN_DIFFERENCES`` with the reason, mirrored in
docs/differences.md, and a test pins our answer instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.baseline import baseline
from guestcpu.engine.compare import CompareResult, compare
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.engine.decode import CpuFacts, decode, facts_from_cpuid
from guestcpu.engine.update import translate, update, update_live
from guestcpu.errors import GuestCpuError
from guestcpu.formats.libvirt_xml import parse_cpu, parse_cpudata, parse_cpus
from guestcpu.formats.qemu_json import definitions_from_reply, expansion_from_reply, models_with_blockers, split_replies
from guestcpu.model.cpu import CpuDefinition, CpuType, Policy

DATA = Path(__file__).parent / "data" / "libvirt-11.3"
CPUTESTDATA = DATA / "cputestdata"
MANIFEST = json.loads((DATA / "cputest_manifest.json").read_text())["cases"]
X86_CASES = [c for c in MANIFEST if c["arch"] == "x86_64"]


def case_id(case: dict[str, Any]) -> str:
    parts = [case["kind"]]
    for key in ("host", "cpu", "input_cpuid", "input_qemu_json", "input_multi_cpu", "feature", "input_guest_cpu"):
        if case.get(key):
            parts.append(str(case[key]).replace("x86_64-", "").replace(".xml", "").replace(".json", ""))
    if case.get("inputs"):
        parts.append("+".join(Path(i).stem.replace("x86_64-cpuid-", "") for i in case["inputs"]))
    if case.get("flags") and case["flags"] != "0":
        parts.append(case["flags"].replace("VIR_CONNECT_BASELINE_CPU_", "").lower())
    if case.get("allowed_models_name"):
        parts.append(case["allowed_models_name"])
    return ":".join(parts)


def cases(kind: str) -> list[Any]:
    return [pytest.param(c, id=case_id(c)) for c in X86_CASES if c["kind"] == kind]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


def read_cpu(name: str) -> CpuDefinition:
    return parse_cpu((CPUTESTDATA / name).read_bytes(), name)


def semantic(cpu: CpuDefinition) -> dict[str, Any]:
    """The parts of a CPU definition libvirt's expected files pin down."""
    return {
        "type": cpu.type,
        "mode": cpu.mode.value if cpu.mode else None,
        "match": cpu.match.value if cpu.match else None,
        "model": cpu.model,
        "fallback": cpu.fallback.value if cpu.fallback else None,
        "vendor": cpu.vendor,
        "features": sorted(
            (f.name, (f.policy or Policy.REQUIRE).value) for f in cpu.features
        ),
    }


def assert_same_cpu(ours: CpuDefinition, expected: CpuDefinition) -> None:
    a, b = semantic(ours), semantic(expected)
    if a != b:
        ours_f, exp_f = set(a.pop("features")), set(b.pop("features"))
        pytest.fail(
            f"differs from libvirt: ours {a} vs {b}; features only ours {sorted(ours_f - exp_f)}, "
            f"only libvirt {sorted(exp_f - ours_f)}"
        )


# -- compare -------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("compare"))
def test_compare(case: dict[str, Any], catalog: Catalog) -> None:
    host = read_cpu(case["host"])
    cpu = read_cpu(case["cpu"])
    if case["expected_result"] == "ERROR":
        with pytest.raises(GuestCpuError):
            compare(host, cpu, catalog)
        return
    result = compare(host, cpu, catalog)
    assert result.result is CompareResult[case["expected_result"]], result.reason


@pytest.mark.parametrize("case", cases("hasfeature"))
def test_hasfeature(case: dict[str, Any], catalog: Catalog) -> None:
    host = read_cpu(case["host"])
    if case["expected"] == "FAIL":
        with pytest.raises(GuestCpuError, match=r"unknown CPU feature"):
            catalog.feature(case["feature"])
        return
    present = bool(compile_cpu(host, catalog).all >> catalog.feature(case["feature"]).index & 1)
    assert present is (case["expected"] == "YES")


# -- update and guest CPU computation -------------------------------------------------


@pytest.mark.parametrize("case", cases("update"))
def test_update(case: dict[str, Any], catalog: Catalog) -> None:
    host = read_cpu(case["host"])
    cpu = read_cpu(case["cpu"])
    ours = update(cpu, host, catalog)
    assert_same_cpu(ours, read_cpu(case["expected_output"]))


@pytest.mark.parametrize("case", cases("guestcpu"))
def test_guestcpu(case: dict[str, Any], catalog: Catalog) -> None:
    host = read_cpu(case["host"])
    cpu = read_cpu(case["cpu"])
    models = {name: () for name in case["allowed_models"]} if case["allowed_models"] else None

    def run() -> CpuDefinition:
        if compare(host, cpu, catalog).result is CompareResult.INCOMPATIBLE:
            raise GuestCpuError("incompatible")
        updated = update(cpu, host, catalog, migratable_host=False)
        return translate(updated, catalog, models)

    if case["expect_failure"]:
        with pytest.raises(GuestCpuError):
            run()
        return
    assert_same_cpu(run(), read_cpu(case["expected_output"]))


# -- decoding real CPUs --------------------------------------------------------------


def qemu_replies(cpuid_name: str) -> list[dict[str, Any]]:
    path = CPUTESTDATA / cpuid_name.replace(".xml", ".json")
    return split_replies(path.read_text(), path.name) if path.exists() else []


def qemu_models(cpuid_name: str, catalog: Catalog) -> dict[str, tuple[str, ...]] | None:
    for reply in qemu_replies(cpuid_name):
        if reply.get("id") == "definitions":
            return models_with_blockers(definitions_from_reply(reply, catalog))
    return None


@pytest.mark.parametrize("case", cases("cpuid_host"))
def test_cpuid_host(case: dict[str, Any], catalog: Catalog) -> None:
    data = parse_cpudata((CPUTESTDATA / case["input_cpuid"]).read_bytes(), case["input_cpuid"])
    result = decode(facts_from_cpuid(data, catalog), catalog, CpuType.HOST)
    expected = read_cpu(case["expected_output"])
    assert_same_cpu(result.cpu, expected)
    assert result.cpu.signature == expected.signature


@pytest.mark.parametrize("case", cases("cpuid_guest"))
def test_cpuid_guest(case: dict[str, Any], catalog: Catalog) -> None:
    data = parse_cpudata((CPUTESTDATA / case["input_cpuid"]).read_bytes(), case["input_cpuid"])
    models = qemu_models(case["input_cpuid"], catalog) if case["json_kind"].startswith("JSON_MODELS") else None
    result = decode(facts_from_cpuid(data, catalog), catalog, CpuType.GUEST, models=models)
    assert_same_cpu(result.cpu, read_cpu(case["expected_output"]))


@pytest.mark.parametrize("case", cases("cpuid_signature"))
def test_cpuid_signature(case: dict[str, Any]) -> None:
    data = parse_cpudata((CPUTESTDATA / case["input_cpuid"]).read_bytes(), case["input_cpuid"])
    expected = int((CPUTESTDATA / case["expected_output"]).read_text().split()[0], 16)
    assert data.signature_eax == expected


def host_model_from_json(name: str, catalog: Catalog) -> CpuDefinition:
    replies = split_replies((CPUTESTDATA / name).read_text(), name)
    expansion = next(r for r in replies if r.get("id") == "model-expansion")
    exp = expansion_from_reply(expansion, catalog, name)
    vendor = catalog.vendor_by_string(exp.vendor_string or "")
    definitions = next((r for r in replies if r.get("id") == "definitions"), None)
    models = models_with_blockers(definitions_from_reply(definitions, catalog)) if definitions else None
    facts = CpuFacts(exp.features, vendor.name if vendor else None, exp.signature_eax)
    return decode(facts, catalog, CpuType.GUEST, models=models).cpu


@pytest.mark.parametrize("case", cases("json_hostmodel"))
def test_json_hostmodel(case: dict[str, Any], catalog: Catalog) -> None:
    ours = host_model_from_json(case["input_qemu_json"], catalog)
    assert_same_cpu(ours, read_cpu(case["expected_output"]))


@pytest.mark.parametrize("case", cases("json_signature"))
def test_json_signature(case: dict[str, Any], catalog: Catalog) -> None:
    replies = split_replies((CPUTESTDATA / case["input_qemu_json"]).read_text(), case["input_qemu_json"])
    exp = expansion_from_reply(next(r for r in replies if r.get("id") == "model-expansion"), catalog)
    expected = int((CPUTESTDATA / case["expected_output"]).read_text().split()[0], 16)
    assert exp.signature_eax == expected


@pytest.mark.parametrize("case", cases("update_live"))
def test_update_live(case: dict[str, Any], catalog: Catalog) -> None:
    guest = read_cpu(case["input_guest_cpu"])
    enabled = catalog.features_from_cpuid(
        parse_cpudata((CPUTESTDATA / case["input_enabled"]).read_bytes(), case["input_enabled"])
    )
    disabled = catalog.features_from_cpuid(
        parse_cpudata((CPUTESTDATA / case["input_disabled"]).read_bytes(), case["input_disabled"])
    )
    live = update_live(guest, enabled, disabled, catalog)
    assert live.ok
    expected = read_cpu(case["expected_output"])
    # libvirt compares the *expanded* feature sets of the two definitions.
    assert catalog.names(compile_cpu(live.cpu, catalog).all) == catalog.names(compile_cpu(expected, catalog).all)


# -- baseline ------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("baseline"))
def test_baseline(case: dict[str, Any], catalog: Catalog) -> None:
    name = case["input_multi_cpu"]
    cpus = parse_cpus((CPUTESTDATA / name).read_bytes(), name)
    flags = case["flags"]
    kwargs = {"expand": "EXPAND_FEATURES" in flags, "migratable": "MIGRATABLE" in flags}
    if case["expect_failure"]:
        with pytest.raises(GuestCpuError):
            baseline(cpus, catalog, **kwargs)
        return
    result = baseline(cpus, catalog, **kwargs)
    assert_same_cpu(result.cpu, read_cpu(case["expected_output"]))
    for cpu in cpus:
        assert compare(cpu, result.cpu, catalog).result is not CompareResult.INCOMPATIBLE


@pytest.mark.parametrize("case", cases("cpuid_baseline"))
def test_cpuid_baseline(case: dict[str, Any], catalog: Catalog) -> None:
    cpus = [read_cpu(name) for name in case["inputs"]]
    result = baseline(cpus, catalog)
    assert_same_cpu(result.cpu, read_cpu(case["expected_output"]))
    for cpu in cpus:
        host = cpu.with_(type=CpuType.HOST)
        assert compare(host, result.cpu, catalog).result is not CompareResult.INCOMPATIBLE
