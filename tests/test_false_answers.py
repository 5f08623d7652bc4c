"""Answers that used to be false (issue 8), each checked on real data and this machine's QEMU 7.2.

* ``migrate-check PIN --to A --to B --to C`` checks every destination, exit 2 if any refuses;
* a destination QEMU that lacks a property the pin names (a pin from a newer QEMU that
  disables ``amd-psfd``) is a refusal, not "OK";
* a hypervisor baseline never requires a feature without the feature it depends on
  (``npt`` without ``svm``, ARCH_CAPABILITIES bits without ``arch-capabilities``), over
  every real CPU of libvirt's corpus, and it starts: the dumps whose own model QEMU 7.2
  lacks (EPYC-Rome-v3, EPYC-v4) give a baseline instead of an error;
* ``compare --caps`` of a ``<domain type='qemu'>`` is judged against TCG;
* ``caps --arch s390x --qemu <an x86 binary>`` is refused and nothing is cached.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.dependencies import dependencies_for
from guestcpu.cli.inputs import host_cpus_from_bytes
from guestcpu.cli.main import main
from guestcpu.formats.qmp_replies import parse_expansion
from guestcpu.lifecycle.pin import fingerprint_of, seal_of
from guestcpu.qemu.cache import read_caps_file
from guestcpu.qemu.hypervisor import hypervisor_baseline
from guestcpu.qemu.process import QemuProcess, base_args, run_sync

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
CAPS = {accel: DATA / "qemu-7.2" / f"caps-{accel}.json" for accel in ("kvm", "tcg")}
QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

GUEST = """<domain type='qemu'>
  <name>g</name>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model>qemu64</model></cpu>
</domain>
"""


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def entry(args: tuple[str, ...]) -> None:
    main(list(args))


def run(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(entry, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def capture_doc(accels: dict[str, Path], unavailable: dict[str, str] | None = None, name: str = "h") -> dict[str, Any]:
    """A host capture holding recorded QEMU 7.2 capabilities documents."""
    return {
        "schema": "guestcpu/host-capture", "schema_version": 1, "hostname": name, "kernel": "6.1",
        "captured_at": "2026-01-01T00:00:00+00:00",
        "qemu": {"binary": "/usr/bin/qemu-system-x86_64", "version": "7.2.22"}, "cpu": {}, "cpuid": None,
        "cpuid_error": "not recorded", "accels": {a: json.loads(p.read_text()) for a, p in accels.items()},
        "unavailable": unavailable or {},
    }


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.fixture(scope="module")
def tcg_pin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    where = tmp_path_factory.mktemp("pin")
    status, _, err = run("define", write(where / "g.xml", GUEST), "-o", where / "pin.json")
    assert status == 0, err
    return where / "pin.json"


def reseal(doc: dict[str, Any]) -> dict[str, Any]:
    """What a guestcpu that made this pin would have written (a pin from another QEMU)."""
    doc["fingerprint"] = fingerprint_of(doc["abi"])
    doc["seal"] = seal_of(doc["abi"], doc["policy"], doc["host"])
    return doc


# -- migrate-check with several destinations -----------------------------------------------------


@needs_qemu
def test_migrate_check_checks_every_destination(tcg_pin: Path, tmp_path: Path) -> None:
    good = write(tmp_path / "a.json", capture_doc({"tcg": CAPS["tcg"]}, name="a"))
    bad = write(tmp_path / "b.json", capture_doc({"kvm": CAPS["kvm"]}, {"tcg": "not captured"}, name="b"))
    also_good = write(tmp_path / "c.json", capture_doc({"tcg": CAPS["tcg"]}, name="c"))
    status, out, err = run("migrate-check", tcg_pin, "--to", good, "--to", bad, "--to", also_good)
    assert status == 2, out + err
    lines = out.splitlines()
    assert lines[0].startswith("migration to a (") and ": OK" in lines[0]
    assert any(line.startswith("migration to b (") and "refused" in line for line in lines)
    assert lines[-1] == f"2 of 3 destinations can give the pinned CPU; refused: b ({bad})"
    status, out, _ = run("migrate-check", tcg_pin, "--to", good, "--to", bad, "--json")
    report = json.loads(out)
    assert status == 2 and report["ok"] is False
    assert [d["ok"] for d in report["destinations"]] == [True, False]
    assert run("restore-check", tcg_pin, "--to", good, "--to", also_good)[0] == 0


# -- a property the destination QEMU lacks --------------------------------------------------------


@needs_qemu
def test_a_property_the_destination_qemu_lacks_is_a_refusal(tcg_pin: Path, tmp_path: Path) -> None:
    capture = write(tmp_path / "h72.json", capture_doc({"tcg": CAPS["tcg"]}))
    assert run("migrate-check", tcg_pin, "--to", capture)[0] == 0
    # The same pin as a QEMU that knows amd-psfd (10.0) writes it: every feature it knows, explicit.
    newer = json.loads(tcg_pin.read_text())
    assert "amd-psfd" not in newer["abi"]["features"]
    newer["abi"]["features"]["amd-psfd"] = "disable"
    pin = write(tmp_path / "pin10.json", reseal(newer))
    status, out, _ = run("migrate-check", pin, "--to", capture, "--json")
    verdict = json.loads(out)
    assert status == 2 and verdict["missing_properties"] == ["amd-psfd"], out
    assert any("lacks CPU properties the pin names" in r and "amd-psfd" in r for r in verdict["reasons"])


@needs_qemu
def test_machine_properties_are_judged_by_the_recorded_property_lists(tcg_pin: Path, tmp_path: Path) -> None:
    # This machine's QEMU, probed now: the capture records the CPU types' property lists.
    status, _, err = run("capture", "-o", tmp_path / "here.json")
    assert status == 0, err
    here = json.loads((tmp_path / "here.json").read_text())
    assert "legacy-cache" in here["accels"]["tcg"]["cpu_properties"]
    assert run("migrate-check", tcg_pin, "--to", tmp_path / "here.json")[0] == 0
    newer = json.loads(tcg_pin.read_text())
    newer["abi"]["props"]["x-newer-cache-layout"] = True
    pin = write(tmp_path / "newer.json", reseal(newer))
    status, out, _ = run("migrate-check", pin, "--to", tmp_path / "here.json", "--json")
    assert status == 2 and json.loads(out)["missing_properties"] == ["x-newer-cache-layout"]
    # And the real QEMU 7.2 agrees: it has no such property on the pinned model.
    model = json.loads(tcg_pin.read_text())["abi"]["model"]

    async def has(prop: str) -> bool:
        async with QemuProcess(QEMU or "", base_args("none", "tcg"), name="props") as qemu:
            found = await qemu.execute("qom-list-properties", {"typename": f"{model}-x86_64-cpu"})
        return prop in {p["name"] for p in found}

    assert run_sync(has("legacy-cache")) and not run_sync(has("x-newer-cache-layout"))


@needs_qemu
def test_every_named_model_has_the_property_list_the_probe_records() -> None:
    """The probe asks one named model's type (and host/max): every named model's list is the same."""
    from guestcpu.formats.qmp_replies import parse_definitions, parse_properties
    from guestcpu.qemu.probe import probe, property_typenames

    async def lists() -> tuple[list[str], dict[str, frozenset[str]]]:
        async with QemuProcess(QEMU or "", base_args("none", "tcg"), name="props") as qemu:
            definitions = parse_definitions(await qemu.execute("query-cpu-definitions"))
            types = sorted({d.typename for d in definitions if d.typename})
            replies = await qemu.execute_many(("qom-list-properties", {"typename": t}) for t in types)
        asked = property_typenames(definitions)
        return asked, {t: frozenset(p.name for p in parse_properties(r)) for t, r in zip(types, replies, strict=True)}

    asked, found = run_sync(lists())
    caps = probe(QEMU or "", "tcg")
    named = {t: props for t, props in found.items() if t.split("-x86_64-cpu")[0] not in ("host", "max")}
    assert len(named) >= 100 and all(props == caps.cpu_properties for props in named.values())
    assert len(asked) == 3
    for special in ("host", "max"):
        assert caps.has_property(special, "migratable") and not caps.has_property("qemu64-v1", "migratable")
        assert set(caps.model(special).extra_properties) == found[f"{special}-x86_64-cpu"] - caps.cpu_properties


# -- baselines honour feature dependencies and start ------------------------------------------------


def corpus_cpus(catalog: Catalog) -> list[tuple[str, Any]]:
    found = []
    for path in sorted(CPUTESTDATA.glob("x86_64-cpuid-*.xml")):
        if path.stem.endswith(("-disabled", "-enabled", "-guest", "-host", "-json")):
            continue
        found.append((path.stem.removeprefix("x86_64-cpuid-"), host_cpus_from_bytes(path.read_bytes(), path.name,
                                                                                    catalog)[0]))
    return found


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_no_hypervisor_baseline_requires_a_feature_without_its_parent(accel: str, catalog: Catalog) -> None:
    caps = read_caps_file(str(CAPS[accel]))
    dependencies = dependencies_for(catalog)
    npt, svm = (1 << catalog.feature(n).index for n in ("npt", "svm"))
    assert dependencies.without_orphans(npt) == 0 and dependencies.without_orphans(npt | svm) == npt | svm
    checked = 0
    for name, cpu in corpus_cpus(catalog):
        # A pair: the dump and itself with svm removed (a nested host whose CPUID keeps npt, as here).
        weakened = cpu.with_(features=tuple(f for f in cpu.features if f.name != "svm"))
        for cpus in ([cpu], [cpu, weakened]):
            try:
                result = hypervisor_baseline(cpus, caps, catalog)
            except Exception as exc:  # a vendor QEMU cannot give at all is a clear refusal, not a bad CPU
                assert "incompatible" in str(exc).lower() or "no feature in common" in str(exc), (name, exc)
                continue
            orphans = dependencies.orphans(result.features)
            assert orphans == 0, f"{name} ({accel}): requires {dependencies.explain(orphans, result.features, catalog)}"
            checked += 1
    assert checked >= 100


@needs_qemu
@pytest.mark.parametrize("cpu", ["EPYC-7502-32-Core", "EPYC-7601-32-Core-ibpb", "Ryzen-9-3900X-12-Core"])
def test_hypervisor_baselines_of_real_amd_cpus_start(cpu: str) -> None:
    status, out, err = run("baseline", "--hypervisor", "--accel", "tcg", CPUTESTDATA / f"x86_64-cpuid-{cpu}.xml",
                           "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["verified_start"], "the baseline was printed without being started"
    assert result["model"] not in ("EPYC-Rome-v3", "EPYC-v4")  # not in QEMU 7.2


@needs_qemu
def test_the_dependency_table_is_what_qemu_does() -> None:
    """QEMU 7.2 turns every listed child off with its parent (a sample of each family)."""
    pairs = {"svm": ["npt", "nrip-save"], "arch-capabilities": ["rdctl-no", "mds-no"],
             "vmx": ["vmx-ept", "vmx-secondary-ctls"], "vmx-ept": ["vmx-ept-2mb"]}

    async def expand(props: dict[str, bool]) -> dict[str, Any]:
        async with QemuProcess(QEMU or "", base_args("none", "tcg"), name="deps") as qemu:
            reply = await qemu.execute("query-cpu-model-expansion",
                                       {"type": "static", "model": {"name": "max", "props": props}})
        return dict(parse_expansion(reply).props)

    table = json.loads((Path(__file__).parent.parent / "src" / "guestcpu" / "catalog" / "data"
                        / "feature-dependencies.json").read_text())["requires"]
    for parent, children in pairs.items():
        assert set(children) <= set(table[parent])
        ancestors = ["vmx", "vmx-secondary-ctls"] if parent == "vmx-ept" else []
        props = {name: True for name in [*ancestors, parent, *children]}
        with_parent = run_sync(expand(props))
        without = run_sync(expand({**props, parent: False}))
        assert all(with_parent[c] is True for c in children), parent
        assert not any(without.get(c) for c in children), parent


@needs_qemu
def test_baseline_of_two_captures_has_no_npt_without_svm(tmp_path: Path) -> None:
    host = write(tmp_path / "host.xml", "<cpu><arch>x86_64</arch><model>kvm64</model><vendor>AMD</vendor>"
                 "<feature name='npt'/><feature name='sse4.2'/></cpu>")
    a = write(tmp_path / "a.json", capture_doc({"tcg": CAPS["tcg"]}, name="a"))
    b = write(tmp_path / "b.json", capture_doc({"tcg": CAPS["tcg"]}, name="b"))
    status, out, err = run("baseline", "--caps", a, "--caps", b, "--accel", "tcg", host, host, "--json")
    assert status == 0, err
    result = json.loads(out)
    policies = {f["name"]: f["policy"] for f in result["features"]}
    assert policies.get("npt") != "require" or policies.get("svm") == "require", policies
    assert result["verified_start"] == [f"document {a}", f"document {b}"]


# -- compare --caps honours the domain type ---------------------------------------------------------


def test_compare_caps_judges_a_qemu_domain_against_tcg(tmp_path: Path) -> None:
    both = write(tmp_path / "both.json", capture_doc({"kvm": CAPS["kvm"], "tcg": CAPS["tcg"]}))
    guest = write(tmp_path / "g.xml", GUEST)
    status, out, err = run("compare", "--caps", both, guest, "--json", "--error")
    result = json.loads(out)
    assert status == 0 and result["accel"] == "tcg", out + err
    kvm_guest = write(tmp_path / "k.xml", GUEST.replace("type='qemu'", "type='kvm'"))
    status, out, _ = run("compare", "--caps", both, kvm_guest, "--json", "--error")
    assert status == 3 and json.loads(out)["accel"] == "kvm"  # qemu64 is blocked by the recorded KVM
    only_kvm = write(tmp_path / "kvm.json", json.loads(CAPS["kvm"].read_text()))
    status, _, err = run("compare", "--caps", only_kvm, guest)
    assert status == 1 and "but the domain type of" in err and "asks for tcg" in err


# -- caps learns the binary's architecture ---------------------------------------------------------


@needs_qemu
def test_caps_for_s390x_with_an_x86_binary_is_refused_and_not_cached(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    status, _, err = run("caps", "--arch", "s390x", "--qemu", QEMU or "")
    assert status == 1
    assert err.strip() == (f"guestcpu: error: {QEMU} is a QEMU for x86_64, not s390x; give a qemu-system-s390x "
                           "binary")
    cached: Sequence[Path] = [p for p in tmp_path.rglob("*.json") if "s390x" in p.name]
    assert cached == []
