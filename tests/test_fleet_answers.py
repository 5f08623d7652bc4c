"""Fleet answers over real CPUs: baseline (who limits it, what stays unused) and where each guest can go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet_support import THREE, kinds, model_pin, pin_document, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.cli.main import cli
from guestcpu.fleet import api
from guestcpu.fleet.cpu_pin import overrides_of
from guestcpu.fleet.placement import fits, placement_matrix
from guestcpu.fleet.store import Store, open_store
from guestcpu.fleet.view import FleetView, HostView, PinView, ProfileView
from guestcpu.lifecycle.compat import check_destination
from guestcpu.qemu.caps import caps_from_document
from guestcpu.qemu.hypervisor import baseline_everywhere, host_model, hypervisor_compare, offered_bits

#: what QEMU's host expansion on the recorded Xeon Gold 6148 lacks of Skylake-Server-v4 (old microcode, kernel)
GOLD_LACKS = {"pku": False, "spec-ctrl": False}


@pytest.fixture
def store(fleet_db_url: str, tmp_path: Path, catalog: Catalog) -> Store:
    store = open_store(fleet_db_url)
    paths = write_captures(catalog, tmp_path)
    api.add_hosts(store, [(str(p), p.read_bytes(), None) for p in paths], catalog, cluster="rack1")
    return store


def test_baseline_is_the_engines_baseline_over_the_hosts_qemu_offers(store: Store, catalog: Catalog) -> None:
    result = api.baseline(store, catalog, cluster="rack1")
    view = api.load_view(store)
    hosts = [(h.name, view.caps(h, "kvm")) for h in view.hosts]
    direct = baseline_everywhere([host_model(c, catalog).cpu for _, c in hosts if c], [(n, c) for n, c in hosts if c],
                                 catalog)
    assert result.model == direct.result.qemu_model
    # The Haswell-era Xeon E5-2650 v3 is the weakest of the three.
    assert result.model.startswith("Haswell")
    for name, caps in hosts:
        assert caps is not None
        assert hypervisor_compare(result.cpu, caps, catalog).comparison.missing_bits == 0, name
    assert all(h.verified for h in result.hosts) and len(result.hosts) == 3


def test_baseline_names_the_hosts_that_keep_each_feature_out(store: Store, catalog: Catalog) -> None:
    result = api.baseline(store, catalog)
    view = api.load_view(store)
    offers = {h.name: offered_bits(view.caps(h, "kvm"), catalog, migratable=True) for h in view.hosts}  # type: ignore[arg-type]
    left = {item.feature: set(item.lacking) for item in result.left_out}
    assert left["avx512f"] == {"core-i7-8700", "xeon-e5-2650-v3"}
    for feature, lacking in left.items():
        bit = 1 << catalog.feature(feature).index
        assert lacking == {h for h, offer in offers.items() if not offer & bit}, feature
        assert feature not in result.features
    assert "xeon-e5-2650-v3" in result.limiting_hosts
    # notEnabledCommon: every host offers it, the baseline leaves it out
    common = offers["core-i7-8700"] & offers["xeon-gold-6148"] & offers["xeon-e5-2650-v3"]
    for feature in result.not_enabled_common:
        assert common >> catalog.feature(feature).index & 1 and feature not in result.features
    assert set(result.features) | set(result.not_enabled_common) >= set(catalog.names(common))


def test_where_names_what_stops_each_host(store: Store, catalog: Catalog) -> None:
    gold = kinds(catalog, ("Xeon-Gold-6148",))[0]
    api.add_pin(store, "db1", model_pin(gold, "Skylake-Server-v4", catalog, overrides=GOLD_LACKS),
                host="xeon-gold-6148")
    everywhere = api.baseline(store, catalog)
    api.add_pin(store, "web1", model_pin(gold, everywhere.model, catalog,
                                         overrides=overrides_of(everywhere.cpu, catalog)))
    api.add_pin(store, "newer", model_pin(gold, "Haswell-v4", catalog, machine="pc-q35-99.0"))
    result = api.where(store).to_json()
    by_pin = {p["pin"]: p for p in result["pins"]}
    assert by_pin["db1"]["hosts"] == ["xeon-gold-6148"] and by_pin["db1"]["runs_on"] == "xeon-gold-6148"
    refused = {r["host"]: r for r in by_pin["db1"]["refused"]}
    assert set(refused) == {"core-i7-8700", "xeon-e5-2650-v3"}
    assert "avx512f" in refused["core-i7-8700"]["verdict"]["missing_features"]
    assert any(r.startswith("missing features: ") and "avx512f" in r for r in refused["xeon-e5-2650-v3"]["reasons"])
    assert sorted(by_pin["web1"]["hosts"]) == sorted(n.lower() for n in THREE)
    assert by_pin["newer"]["hosts"] == []
    assert all(r["verdict"]["missing_machine"] == "pc-q35-99.0" for r in by_pin["newer"]["refused"])


def test_where_gives_the_qemu_version_when_a_model_is_missing(catalog: Catalog) -> None:
    gold = kinds(catalog, ("Xeon-Gold-6148",))[0]
    pin = model_pin(gold, "Haswell-v4", catalog)
    doc = pin_document(pin)
    doc["made_with"]["qemu_version"] = "10.0.2"
    older = caps_from_document(dict(gold.accels["kvm"]))
    from dataclasses import replace

    older = replace(older, models=tuple(m for m in older.models if m.name != "Haswell-v4"))
    from guestcpu.fleet.placement import verdict_for
    from guestcpu.lifecycle.pin import pin_from_document

    view = FleetView((HostView("old", "c", profiles={"kvm": "d"}),), {"d": ProfileView("d", older, True)})
    verdict, reasons = verdict_for(view, view.hosts[0], pin_from_document(doc), "migrate")
    assert verdict.missing_model == "Haswell-v4"
    assert f"its QEMU is {older.qemu_version}; the guest was pinned with QEMU 10.0.2" in reasons


def test_the_matrix_agrees_with_migrate_check_on_every_pair(catalog: Catalog) -> None:
    """Every real CPU of the corpus, with TSX and PKU variations, against pins of many models."""
    all_kinds = kinds(catalog, None, ("", "tsx-off", "pku-off"))
    profiles = {k.label: ProfileView(k.label, caps_from_document(dict(k.accels["kvm"])), True) for k in all_kinds}
    view = FleetView(tuple(HostView(k.label, "c", profiles={"kvm": k.label}) for k in all_kinds), profiles)
    pins = []
    for model in ("Nehalem-v2", "Westmere-v2", "SandyBridge-v2", "Haswell-v4", "Broadwell-v4", "Skylake-Client-v4",
                  "Skylake-Server-v5", "Cascadelake-Server-v5", "Icelake-Server-v6", "EPYC-v3", "EPYC-Rome-v2",
                  "EPYC-Milan-v1", "Opteron_G3-v1", "qemu64-v1"):
        source = next(k for k in all_kinds if profiles[k.label].caps.model(model) is not None)
        pins.append(PinView(model, model_pin(source, model, catalog)))
    pins.append(PinView("invtsc", model_pin(all_kinds[0], "qemu64-v1", catalog, overrides={"invtsc": True})))
    for purpose in ("migrate", "start"):
        matrix = fits(view, pins, purpose)
        agree = 0
        for item, row in zip(pins, matrix, strict=True):
            for label, profile in profiles.items():
                expected = check_destination(item.pin, profile.caps, purpose=purpose, destination=label).ok
                assert row[label] == expected, (item.name, label, purpose)
                agree += 1
        assert agree == len(pins) * len(profiles)
    # both answers occur: the test is not vacuous
    migrate = fits(view, pins, "migrate")
    assert any(any(r.values()) for r in migrate) and any(not all(r.values()) for r in migrate)
    assert not any(migrate[-1].values())  # invtsc blocks live migration everywhere


def test_placement_matrix_shape(catalog: Catalog) -> None:
    kind = kinds(catalog, ("Core-i7-8700",))[0]
    caps = caps_from_document(dict(kind.accels["kvm"]))
    pin = model_pin(kind, "Skylake-Client-v4", catalog)
    matrix = placement_matrix([pin, pin], ["a"], [caps], "kvm", "migrate")
    assert matrix.ok.shape == (2, 1) and bool(matrix.ok.all())


def test_cli_json_equals_the_api(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    gold = kinds(catalog, ("Xeon-Gold-6148",))[0]
    pin_path = tmp_path / "db1.pin.json"
    pin_path.write_text(json.dumps(pin_document(model_pin(gold, "Skylake-Server-v4", catalog, overrides=GOLD_LACKS))))
    db_url = store.url
    runner = CliRunner()
    added = runner.invoke(cli, ["fleet", "add-pin", str(pin_path), "--host", "xeon-gold-6148", "--db", db_url])
    assert added.exit_code == 0, added.output
    assert "added pin db1" in added.output
    out = runner.invoke(cli, ["fleet", "baseline", "--cluster", "rack1", "--json", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == api.baseline(store, catalog, cluster="rack1").to_json()
    out = runner.invoke(cli, ["fleet", "where", "db1", "--json", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == api.where(store, ["db1"]).to_json()
    text = runner.invoke(cli, ["fleet", "where", str(pin_path), "--db", db_url])
    assert "xeon-e5-2650-v3: missing features:" in text.output
    text = runner.invoke(cli, ["fleet", "baseline", "--db", db_url])
    assert "left out (hosts lacking them):" in text.output and "verified startable on 3 of 3 hosts" in text.output


def test_cli_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "guestcpu/host-capture", "schema_version": 7}')
    db = f"sqlite:///{tmp_path / 'f.db'}"
    run = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "fleet", "add", str(bad), "--db", db],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "schema version 7" in run.stderr
    run = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "fleet", "history", "nohost", "--db", db],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1 and run.stderr.strip() == "guestcpu: error: unknown host 'nohost'; the inventory " \
                                                          "has no hosts yet"


def test_cli_add_of_a_folder_adds_its_captures_and_domcapabilities(tmp_path: Path, catalog: Catalog) -> None:
    """A DIR argument stands for its *.json and *.xml files; other files and subfolders are not read."""
    from fleet_support import DATA

    folder = tmp_path / "hosts"
    folder.mkdir()
    captures = write_captures(catalog, folder)
    (folder / "README.txt").write_text("not a host")
    (folder / "old").mkdir()
    db_url = f"sqlite:///{tmp_path / 'f.db'}"
    runner = CliRunner()
    out = runner.invoke(cli, ["fleet", "add", str(folder), "--cluster", "lab", "--db", db_url, "--json"])
    assert out.exit_code == 0, out.output
    added = json.loads(out.output)
    assert sorted(h["host"] for h in added["hosts"]) == sorted(json.loads(p.read_bytes())["hostname"]
                                                               for p in captures)
    xml = folder / "i7.xml"
    xml.write_bytes((DATA / "xml" / "domcapabilities-core-i7-7700.xml").read_bytes())
    out = runner.invoke(cli, ["fleet", "add", str(xml), "--name", "i7", "--db", db_url, "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["added"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.invoke(cli, ["fleet", "add", str(empty), "--db", db_url])
    assert out.exit_code == 1 and "no *.json captures or *.xml domain capabilities" in str(out.exception)
    out = runner.invoke(cli, ["fleet", "add", str(folder), "--name", "x", "--db", db_url])
    assert out.exit_code == 1 and "exactly one FILE" in str(out.exception)


def test_cli_add_pins_stores_a_folder_of_pins_in_one_transaction(tmp_path: Path, catalog: Catalog) -> None:
    from guestcpu.lifecycle.pin import dumps_pin

    kind = kinds(catalog, THREE[:1])[0]
    folder = tmp_path / "pins"
    folder.mkdir()
    for guest, model in (("web1", "Haswell-v4"), ("web2", "Haswell-v4"), ("db1", "IvyBridge-v2")):
        (folder / f"{guest}.pin.json").write_text(dumps_pin(model_pin(kind, model, catalog)))
    (folder / "notes.txt").write_text("not a pin")
    db_url = f"sqlite:///{tmp_path / 'f.db'}"
    runner = CliRunner()
    out = runner.invoke(cli, ["fleet", "add-pins", str(folder), "--db", db_url, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["added"] == 3
    assert [p.name for p in api.load_view(open_store(db_url)).pins] == ["db1", "web1", "web2"]
    out = runner.invoke(cli, ["fleet", "add-pins", str(folder), "--db", db_url])
    assert out.exit_code == 0 and "stored 3 pins (0 added, 3 replaced)" in out.output
    edited = json.loads((folder / "db1.pin.json").read_text())
    edited["abi"]["family"] = 99
    (folder / "zz.pin.json").write_text(json.dumps(edited))
    (folder / "new.pin.json").write_text(dumps_pin(model_pin(kind, "Westmere-v2", catalog)))
    out = runner.invoke(cli, ["fleet", "add-pins", str(folder), "--db", db_url])
    assert out.exit_code == 1 and "zz.pin.json" in str(out.exception)
    assert len(api.load_view(open_store(db_url)).pins) == 3  # 'new' was not stored either


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD", None])
def test_baseline_over_minimal_profiles_is_the_baseline_over_all(catalog: Catalog, vendor: str | None) -> None:
    """The corpus' real CPUs with TSX/PKU variations: only the minimal profiles are judged in full by QEMU's rules;
    the answer, and every profile's verdict, equal the full judgement over every profile."""
    from guestcpu.fleet.baseline import fleet_baseline

    all_kinds = kinds(catalog, None, ("", "tsx-off", "pku-off"))
    caps = {k.label: caps_from_document(dict(k.accels["kvm"])) for k in all_kinds}
    def vendor_of(label: str) -> object:
        expansion = caps[label].host_static
        return expansion.get("vendor") if expansion else None

    chosen = [k for k in all_kinds if vendor is None or vendor_of(k.label) == vendor]
    profiles = {k.label: ProfileView(k.label, caps[k.label], True) for k in chosen}
    view = FleetView(tuple(HostView(k.label, "c", profiles={"kvm": k.label}) for k in chosen), profiles)
    result = fleet_baseline(view, catalog)
    assert result.judged_profiles < result.profiles == len(chosen)
    if vendor is not None:
        reps = [(k.label, caps[k.label]) for k in chosen]
        full = baseline_everywhere([host_model(c, catalog).cpu for _, c in reps], reps, catalog)
        assert result.model == full.result.qemu_model and result.level is None
        assert set(result.features) == set(catalog.names(full.result.features))
    else:
        assert result.level is not None and result.level.startswith("x86-64-v")
    for verdict in result.hosts:
        judged = hypervisor_compare(result.cpu, caps[verdict.host], catalog)
        assert verdict.result == judged.result.value, verdict.host
        assert verdict.verified == (judged.comparison.missing_bits == 0)
    assert all(v.verified for v in result.hosts)


def test_where_counts_agree_with_where(store: Store, catalog: Catalog) -> None:
    gold = kinds(catalog, ("Xeon-Gold-6148",))[0]
    api.add_pin(store, "db1", model_pin(gold, "Skylake-Server-v4", catalog, overrides=GOLD_LACKS))
    api.add_pin(store, "old", model_pin(gold, "Westmere-v2", catalog))
    full = api.where(store)
    counts = api.where_counts(store).to_json()
    assert [(p["pin"], p["hosts_ok"]) for p in counts["pins"]] == [(p.name, len(p.hosts)) for p in full.pins]
    assert counts["hosts"] == 3
