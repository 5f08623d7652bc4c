"""What-if, x86-64 levels, frozen clusters (EVC-like admission) and x86-64-vN guests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet_support import THREE, kinds, model_pin, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.cli.main import cli
from guestcpu.errors import InputError
from guestcpu.fleet import api
from guestcpu.fleet.inventory import AdmissionError
from guestcpu.fleet.levels import guest_os_table
from guestcpu.fleet.store import Store, open_store
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.levels import level_cpu, level_table
from guestcpu.model.cpu import CpuDefinition, CpuType, Mode, Policy
from guestcpu.qemu.hypervisor import offered_bits


def add(store: Store, catalog: Catalog, paths: list[Path], **options: object) -> api.AddReport:
    return api.add_hosts(store, [(str(p), p.read_bytes(), None) for p in paths], catalog, **options)  # type: ignore[arg-type]


@pytest.fixture
def store(fleet_db_url: str, tmp_path: Path, catalog: Catalog) -> Store:
    store = open_store(fleet_db_url)
    add(store, catalog, write_captures(catalog, tmp_path, THREE[:2]), cluster="rack1")
    return store


def test_what_if_adding_a_weaker_host_lowers_the_baseline(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    (weak,) = write_captures(catalog, tmp_path, THREE[2:])
    result = api.what_if(store, catalog, add=[(str(weak), weak.read_bytes(), None)], cluster="rack1")
    change = result.to_json()["baseline"]
    assert result.before is not None and result.after is not None
    assert change["model_changed"] and change["model_after"].startswith("Haswell")
    assert change["features_lost"] and set(change["features_lost"]) <= set(result.before.features)
    assert api.hosts(store).to_json()["hosts"].__len__() == 2  # nothing stored


def test_what_if_names_stranded_guests(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    gold = kinds(catalog, ("Xeon-Gold-6148",))[0]
    everywhere = api.baseline(store, catalog)
    from guestcpu.fleet.cpu_pin import overrides_of

    pin = model_pin(gold, everywhere.model, catalog, overrides=overrides_of(everywhere.cpu, catalog))
    api.add_pin(store, "app", pin, host="core-i7-8700")
    # retiring the other host leaves the guest without a destination
    result = api.what_if(store, catalog, remove=["xeon-gold-6148"])
    (guest,) = result.guests
    assert guest.destinations_before == 1 and guest.destinations_after == 0 and guest.lost_last_destination
    assert result.stranded == ["app"]
    # a microcode update removing TSX from the host it runs on: can it still start there?
    (tsx_off,) = write_captures(catalog, tmp_path, ("Core-i7-8700",), variation="tsx-off")
    upgraded = api.what_if(store, catalog, upgrade=[(str(tsx_off), tsx_off.read_bytes(), "core-i7-8700")])
    needs_tsx = "rtm" in pin.abi.required
    assert upgraded.guests[0].cannot_start_where_it_runs == needs_tsx
    retired = api.what_if(store, catalog, remove=["core-i7-8700"])
    assert retired.guests[0].cannot_start_where_it_runs
    assert retired.guests[0].reasons[0] == "its host core-i7-8700 is retired"
    with pytest.raises(InputError, match="unknown host 'nope'"):
        api.what_if(store, catalog, remove=["nope"])


def test_levels_come_from_the_qemu_offer(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    add(store, catalog, write_captures(catalog, tmp_path, ("Atom-D510",)), cluster="rack1")
    result = api.levels(store, catalog, cluster="rack1")
    view = api.load_view(store)
    table = level_table()
    for host in result.hosts:
        caps = view.caps(view.host(host.host), "kvm")
        assert caps is not None
        offered = offered_bits(caps, catalog, migratable=True)
        for level in table.levels:
            gives = not table.bits(level, catalog) & ~offered
            assert gives == (level.number <= host.level), (host.host, level.name)
    levels = {h.host: h.level for h in result.hosts}
    assert levels["xeon-gold-6148"] == 4 and levels["atom-d510"] < levels["core-i7-8700"]
    assert result.cluster_level == levels["atom-d510"] and result.limiting == ("atom-d510",)
    rhel10 = next(o for o in result.guest_os if o.os.name == "RHEL 10")
    assert "xeon-gold-6148" in rhel10.hosts and "atom-d510" not in rhel10.hosts
    assert all(os.source for os in guest_os_table())


def test_freeze_then_admission(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    frozen = api.freeze(store, catalog, "rack1")
    view = api.load_view(store)
    assert view.frozen == {"rack1": "cluster:rack1"} and view.pins == ()
    for host in view.hosts:
        assert check_destination(frozen.pin, view.caps(host, "kvm"), purpose="migrate", destination=host.name).ok
    # a weaker host cannot give the frozen CPU: refused, naming the features, nothing stored
    (weak,) = write_captures(catalog, tmp_path, ("Atom-D510",))
    with pytest.raises(AdmissionError, match=r"host atom-d510 cannot give the frozen CPU of cluster rack1 "
                                             r"\(.*\): missing features: .*avx"):
        add(store, catalog, [weak], cluster="rack1")
    assert len(api.hosts(store).hosts) == 2
    report = add(store, catalog, [weak], cluster="rack1", force=True)
    assert not report.added[0].operational
    listing = {h["name"]: h for h in api.hosts(store).to_json()["hosts"]}
    assert not listing["atom-d510"]["operational"] and "missing features" in listing["atom-d510"]["status_note"]
    # another cluster is not frozen
    add(store, catalog, [weak], cluster="lab")
    with pytest.raises(InputError, match="unknown cluster 'nope'"):
        api.freeze(store, catalog, "nope")


def test_level_models_become_a_base_model_with_explicit_features(catalog: Catalog) -> None:
    cpu = CpuDefinition(type=CpuType.GUEST, mode=Mode.CUSTOM, model="x86-64-v3")
    expressed = level_cpu(cpu, catalog)
    assert expressed.model == "qemu64"
    required = {f.name for f in expressed.features if f.policy is Policy.REQUIRE}
    assert {"avx2", "fma", "movbe", "sse4.2", "cx16"} <= required and "avx512f" not in required
    assert expressed.feature_policy("svm") is Policy.DISABLE
    assert level_cpu(CpuDefinition(type=CpuType.GUEST, model="Haswell-v4"), catalog).model == "Haswell-v4"


@pytest.mark.qemu
def test_define_x86_64_v2_on_a_real_qemu(tmp_path: Path) -> None:
    """A live QEMU under TCG pins x86-64-v2 as qemu64 plus the level, with vendor and family spelled out."""
    from qemu_support import QEMU

    xml = tmp_path / "v2.xml"
    xml.write_text("<cpu mode='custom' match='exact'><model>x86-64-v2</model></cpu>")
    out = tmp_path / "v2.pin.json"
    result = CliRunner().invoke(cli, ["define", str(xml), "--qemu", QEMU, "--accel", "tcg",
                                      "--machine", "pc-q35-7.2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    abi = json.loads(out.read_text())["abi"]
    assert abi["model"].startswith("qemu64")
    for feature in ("popcnt", "sse4.2", "ssse3", "cx16", "lahf-lm"):
        assert abi["features"][feature] == "require", feature
    assert abi["features"]["svm"] == "disable"
    assert abi["vendor"] and abi["family"] and abi["model_id"]


def test_cli_levels_what_if_freeze(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    runner = CliRunner()
    (weak,) = write_captures(catalog, tmp_path, THREE[2:])
    out = runner.invoke(cli, ["fleet", "levels", "--json", "--db", store.url])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == api.levels(store, catalog).to_json()
    out = runner.invoke(cli, ["fleet", "what-if", "--add", str(weak), "--db", store.url])
    assert out.exit_code == 0, out.output
    assert "baseline changes:" in out.output and "guests stranded: 0 of 0" in out.output
    out = runner.invoke(cli, ["fleet", "what-if", "--upgrade", "nonsense", "--db", store.url])
    assert out.exit_code != 0
    out = runner.invoke(cli, ["fleet", "freeze", "rack1", "--db", store.url])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("cluster rack1 frozen to ")
