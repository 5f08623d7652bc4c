"""The inventory database: schema by migrations, hosts with history, pins, one transaction per command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fleet_support import DOMCAPS, THREE, kinds, model_pin, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.fleet import api
from guestcpu.fleet import schema as db
from guestcpu.fleet.store import Store, StoreError, open_store
from guestcpu.fleet.view import unknown


@pytest.fixture
def store(fleet_db_url: str) -> Store:
    return open_store(fleet_db_url)


def count(store: Store, table: type[db.Base]) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def add_files(store: Store, catalog: Catalog, paths: list[Path], **options: object) -> api.AddReport:
    return api.add_hosts(store, [(str(p), p.read_bytes(), None) for p in paths], catalog, **options)  # type: ignore[arg-type]


def test_a_new_database_gets_the_schema_and_the_orm_matches_the_migrations(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), db.Base.metadata)
    assert diffs == []


def test_hosts_from_captures_share_profiles(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    report = add_files(store, catalog, write_captures(catalog, tmp_path), cluster="rack1", tags=("prod",))
    assert [a.host for a in report.added] == [n.lower() for n in THREE]
    assert count(store, db.Host) == 3
    # three KVM profiles (one per CPU) and one TCG profile (TCG does not depend on the host CPU)
    assert count(store, db.Profile) == 4
    listing = api.hosts(store, cluster="rack1").to_json()
    assert {h["name"] for h in listing["hosts"]} == {n.lower() for n in THREE}
    assert all(h["tags"] == ["prod"] and h["accels"] == ["kvm", "tcg"] for h in listing["hosts"])


def test_re_adding_a_host_keeps_history_and_names_what_changed(store: Store, catalog: Catalog,
                                                             tmp_path: Path) -> None:
    (before,) = write_captures(catalog, tmp_path, ("Xeon-Gold-6148",))
    add_files(store, catalog, [before])
    (after,) = write_captures(catalog, tmp_path, ("Xeon-Gold-6148",), variation="tsx-off")
    report = add_files(store, catalog, [after])
    assert report.added[0].replaced
    history = api.history(store, "xeon-gold-6148")
    assert [s.seq for s in history.states] == [1, 2]
    assert history.states[0].changes == ()
    assert "kvm: no longer offers hle, rtm" in history.states[1].changes
    assert count(store, db.Host) == 1 and count(store, db.HostState) == 2
    # the same capture again: a new state with nothing changed
    add_files(store, catalog, [after])
    assert api.history(store, "xeon-gold-6148").states[-1].changes == ()


def test_hosts_from_libvirt_domcapabilities(store: Store, catalog: Catalog) -> None:
    data = (DOMCAPS / "domcaps-kvm.xml").read_bytes()
    api.add_hosts(store, [("domcaps-kvm.xml", data, "epyc-libvirt")], catalog)
    view = api.load_view(store)
    host = view.host("epyc-libvirt")
    assert list(host.profiles) == ["kvm"]
    caps = view.caps(host, "kvm")
    assert caps is not None and caps.host_static is not None
    assert caps.host_static.get("vendor") == "AuthenticAMD"
    # libvirt's host-model names its features; they are all offered, pni is disabled
    assert {"x2apic", "clzero", "invtsc"} <= set(caps.host_static.enabled)
    assert "pni" not in caps.host_static.enabled
    assert not view.profiles[host.profiles["kvm"]].verified


def test_pins_are_stored_with_the_host_they_run_on(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    add_files(store, catalog, write_captures(catalog, tmp_path))
    kind = kinds(catalog, ("Xeon-E5-2650-v3",))[0]
    pin = model_pin(kind, "Haswell-v4", catalog)
    assert not api.add_pin(store, "web1", pin, host="xeon-e5-2650-v3").replaced
    assert api.add_pin(store, "web1", pin, host="xeon-gold-6148").replaced
    view = api.load_view(store)
    assert [(p.name, p.host, p.pin.fingerprint) for p in view.pins] == [("web1", "xeon-gold-6148", pin.fingerprint)]


def test_many_pins_share_bodies_and_read_back_as_stored(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    """1,200 guests on 3 CPUs in one call: one body per distinct pin; each guest keeps its own name and UUID
    and host; a name stored before is replaced; a name given twice stores nothing."""
    import uuid as uuids
    from dataclasses import replace

    add_files(store, catalog, write_captures(catalog, tmp_path))
    kind = kinds(catalog, ("Xeon-E5-2650-v3",))[0]
    cpus = [model_pin(kind, m, catalog) for m in ("Haswell-v4", "IvyBridge-v2", "Westmere-v2")]
    api.add_pin(store, "guest0007", cpus[2])
    items = [(f"guest{i:04d}", replace(cpus[i % 3], name=f"vm{i}", uuid=str(uuids.UUID(int=i)) if i % 2 else None),
              "xeon-gold-6148" if i % 5 == 0 else None) for i in range(1200)]
    added = api.add_pins(store, items)
    assert [(a.name, a.replaced) for a in added] == [(n, n == "guest0007") for n, _, _ in items]
    view = api.load_view(store)
    assert [(p.name, p.pin, p.host) for p in view.pins] == items
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(db.PinBody)) == 3  # names and UUIDs aside, 3 CPUs
    before = count(store, db.Pin)
    with pytest.raises(InputError, match="pin guest0001 is given twice; nothing was stored"):
        api.add_pins(store, [("new1", cpus[0], None), ("guest0001", cpus[0], None), ("guest0001", cpus[1], None)])
    with pytest.raises(InputError, match="unknown host"):
        api.add_pins(store, [("new2", cpus[0], None), ("new3", cpus[0], "nohost")])
    assert count(store, db.Pin) == before


def test_names_made_in_a_transaction_are_known_to_its_later_batches(store: Store, catalog: Catalog) -> None:
    """Batches look names up in one set read per transaction; a pin or frozen CPU made there joins it."""
    from guestcpu.fleet.inventory import Inventory

    kind = kinds(catalog, ("Xeon-E5-2650-v3",))[0]
    pin = model_pin(kind, "Haswell-v4", catalog)
    with store.transaction() as session:
        inventory = Inventory(session)
        assert inventory.add_pins([("a", pin, None)]) == [False]
        assert not inventory.add_pin("b", pin)
        assert inventory.add_pins([("b", pin, None), ("a", pin, None), ("c", pin, None)]) == [True, True, False]
    assert [p.name for p in api.load_view(store).pins] == ["a", "b", "c"]


# -- bad input: one clear message, nothing changed ----------------------------------------
def test_a_capture_of_another_schema_version_changes_nothing(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    good, bad = write_captures(catalog, tmp_path, THREE[:2])
    doc = json.loads(bad.read_text())
    doc["schema_version"] = 99
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="host-capture schema version 99; this guestcpu reads version 1"):
        add_files(store, catalog, [good, bad])
    assert count(store, db.Host) == 0 and count(store, db.Profile) == 0


def test_domcapabilities_of_another_arch_is_refused(store: Store, catalog: Catalog) -> None:
    data = (DOMCAPS / "domcaps-kvm-i686.xml").read_bytes()
    with pytest.raises(InputError, match="i686 architecture; a fleet holds x86_64 hosts"):
        api.add_hosts(store, [("domcaps-kvm-i686.xml", data, "old")], catalog)
    assert count(store, db.Host) == 0


def test_a_file_that_is_neither_is_refused(store: Store, catalog: Catalog) -> None:
    with pytest.raises(InputError, match="neither a guestcpu capture"):
        api.add_hosts(store, [("junk", b"{not json", None)], catalog)
    with pytest.raises(InputError, match=r"not a guestcpu host capture .*'guestcpu/pin'"):
        api.add_hosts(store, [("pin", b'{"schema": "guestcpu/pin"}', None)], catalog)


def test_unknown_host_and_cluster(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    add_files(store, catalog, write_captures(catalog, tmp_path), cluster="rack1")
    with pytest.raises(InputError, match="unknown host 'xeon-gold-614'; did you mean 'xeon-gold-6148'"):
        api.history(store, "xeon-gold-614")
    with pytest.raises(InputError, match="unknown cluster 'rack2'; did you mean 'rack1'"):
        api.baseline(store, catalog, cluster="rack2")
    with pytest.raises(InputError, match="unknown host"):
        api.add_pin(store, "g", model_pin(kinds(catalog, THREE[:1])[0], "Haswell-v4", catalog), host="nope")
    assert str(unknown("pin", "x", [])) == "unknown pin 'x'; the inventory has no pins yet"


def test_an_unreachable_database() -> None:
    one_line = r"^cannot use database postgresql://nobody@127.0.0.1:9/fleet: connection failed: .*refused[^\n]*$"
    with pytest.raises(StoreError, match=one_line):
        open_store("postgresql://nobody@127.0.0.1:9/fleet")
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("no scheme here")
    with pytest.raises(StoreError, match="only SQLite and PostgreSQL"):
        open_store("mysql://x@y/z")


def test_an_older_schema_is_refused_until_migrated(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from guestcpu.fleet.store import _alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0001_initial")
    engine.dispose()
    with pytest.raises(StoreError, match=f"revision '0001_initial', older than '{db.SCHEMA_REVISION}'; "
                                         "run 'guestcpu fleet migrate --db sqlite:///"):
        open_store(url)
    open_store(url, migrate=True).close()
    open_store(url).close()


def test_pins_stored_before_bodies_were_shared_migrate_unchanged(fleet_db_url: str, catalog: Catalog) -> None:
    """0002 kept a whole document per pin; 0003 splits it into the guest's name/UUID and a shared body.
    The pins read back after the upgrade are the pins stored before it, and a downgrade gives the documents back."""
    import datetime
    from dataclasses import replace

    import sqlalchemy as sa
    from alembic import command

    from guestcpu.fleet.store import _alembic_config
    from guestcpu.lifecycle.pin import pin_from_document, pin_to_document

    kind = kinds(catalog, THREE[:1])[0]
    haswell = model_pin(kind, "Haswell-v4", catalog)
    pins = {"web1": replace(haswell, name="web1", uuid="0b1e7a42-1111-4c5e-9d6b-3f2a1c4e5d6f"),
            "web2": replace(haswell, name="web2", uuid=None), "db1": model_pin(kind, "IvyBridge-v2", catalog)}
    url = fleet_db_url
    engine = sa.create_engine(url)
    table = sa.table("pins", sa.column("name", sa.String), sa.column("fingerprint", sa.String),
                     sa.column("document", sa.JSON), sa.column("added_at", sa.DateTime))
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0002_pin_host_index")
        connection.execute(table.insert(), [
            {"name": n, "fingerprint": p.fingerprint, "document": pin_to_document(p),
             "added_at": datetime.datetime.now(datetime.UTC)} for n, p in pins.items()])
    engine.dispose()
    store = open_store(url, migrate=True)
    view = api.load_view(store)
    assert {p.name: p.pin for p in view.pins} == pins
    with store.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(db.PinBody)) == 2  # web1 and web2 share one
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0002_pin_host_index")
        back = dict(connection.execute(sa.select(table.c.name, table.c.document)).all())
    engine.dispose()
    assert {n: pin_from_document(d, n) for n, d in back.items()} == pins


def test_a_database_of_something_else_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="has tables but no guestcpu fleet schema"):
        open_store(f"sqlite:///{path}")
    path.write_bytes(b"this is not a database at all, just text" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        open_store(f"sqlite:///{path}")


def test_a_host_given_twice_adds_nothing(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    (path,) = write_captures(catalog, tmp_path, THREE[:1])
    with pytest.raises(StoreError, match="given twice"):
        add_files(store, catalog, [path, path])
    assert count(store, db.Host) == 0


def test_a_large_add_is_the_same_inventory_as_one_host_at_a_time(
    fleet_db_url: str, catalog: Catalog, tmp_path: Path
) -> None:
    """Batches insert the new hosts many rows per statement; the inventory is the one single adds leave,
    and hosts already known in a batch get a new state with their history, in the order given."""
    from guestcpu.fleet.synthetic import capture_document

    all_kinds = kinds(catalog, THREE, ("", "tsx-off"))
    plain = [k for k in all_kinds if not k.variation]
    inputs = [(f"h{i}", json.dumps(capture_document(all_kinds[i % len(all_kinds)], f"h{i:04d}")).encode(), None)
              for i in range(520)]
    bulk = open_store(fleet_db_url)
    progress: list[int] = []
    report = api.add_hosts(bulk, inputs, catalog, cluster="big", tags=("t",), progress=lambda: progress.append(1))
    assert len(report.added) == len(progress) == 520 and report.to_json()["added"] == 520
    one_by_one = open_store(f"sqlite:///{tmp_path / 'slow.db'}")
    for item in inputs[:50]:
        api.add_hosts(one_by_one, [item], catalog, cluster="big", tags=("t",))
    fast, slow = api.load_view(bulk), api.load_view(one_by_one)
    assert [(h.name, h.cluster, h.tags, h.profiles) for h in fast.hosts[:50]] == \
        [(h.name, h.cluster, h.tags, h.profiles) for h in slow.hosts]
    assert len(fast.profiles) == len(all_kinds) + 1  # one KVM profile per kind, one TCG profile for all

    # a batch of known and new hosts: h0000..h0009 come back as another kind, 600 new ones besides
    other = [next(k for k in plain if k.cpu != all_kinds[i % len(all_kinds)].cpu) for i in range(10)]
    again = [(f"again{i}", json.dumps(capture_document(other[i], f"h{i:04d}")).encode(), None) for i in range(10)]
    more = [(f"n{i}", json.dumps(capture_document(plain[0], f"new{i:04d}")).encode(), None) for i in range(600)]
    mixed = [*more[:300], *again, *more[300:]]
    report = api.add_hosts(bulk, mixed, catalog)
    assert [a.host for a in report.added] == [json.loads(d)["hostname"] for _, d, _ in mixed]
    replaced = [a for a in report.added if a.replaced]
    assert [a.host for a in replaced] == [f"h{i:04d}" for i in range(10)]
    assert all(a.changes and a.cluster == "big" for a in replaced)  # another CPU: changes named, cluster kept
    assert [s.seq for s in api.history(bulk, "h0003").states] == [1, 2]
    assert [s.seq for s in api.history(bulk, "h0011").states] == [1]
    assert count(bulk, db.Host) == 1120


def test_parsing_in_worker_processes_gives_the_same_inventory(tmp_path: Path, catalog: Catalog) -> None:
    """workers=2: the records come back in order with every document, so the store is the one a serial add
    leaves; a damaged capture among them is the same one error, and nothing is stored."""
    from fleet_support import DATA
    from guestcpu.fleet.synthetic import capture_document

    all_kinds = kinds(catalog, THREE, ("", "tsx-off"))
    inputs = [(f"h{i}.json", json.dumps(capture_document(all_kinds[i % len(all_kinds)], f"h{i:03d}")).encode(), None)
              for i in range(90)]
    inputs.insert(40, ("i7.xml", (DATA / "xml" / "domcapabilities-core-i7-7700.xml").read_bytes(), "i7"))
    views = []
    for workers in (0, 2):
        store = open_store(f"sqlite:///{tmp_path / f'w{workers}.db'}")
        seen: list[int] = []
        report = api.add_hosts(store, inputs, catalog, workers=workers, progress=lambda s=seen: s.append(1))
        assert len(seen) == len(report.added) == 91
        views.append(api.load_view(store))
    serial, parallel = views
    assert [(h.name, h.profiles) for h in parallel.hosts] == [(h.name, h.profiles) for h in serial.hosts]
    assert parallel.profiles.keys() == serial.profiles.keys()
    assert all(parallel.profiles[d].caps == serial.profiles[d].caps for d in serial.profiles)

    damaged = json.loads(inputs[60][1])
    damaged["accels"]["kvm"]["models"][0]["usable"] = "yes"
    bad = [*inputs[:60], ("bad.json", json.dumps(damaged).encode(), None), *inputs[61:]]
    errors = []
    for workers in (0, 2):
        store = open_store(f"sqlite:///{tmp_path / f'bad{workers}.db'}")
        with pytest.raises(InputError) as caught:
            api.add_hosts(store, bad, catalog, workers=workers)
        errors.append(str(caught.value))
        assert count(store, db.Host) == 0
    assert errors[0] == errors[1] and "bad.json (kvm) is damaged at $.models[0].usable" in errors[0]


class _DiesWhenUnpickled:
    """Passed to a worker as its catalog: unpickling it ends that process, as a kill or the OOM killer would."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return os._exit, (9,)


def test_a_worker_that_dies_is_one_error_not_a_hang(catalog: Catalog) -> None:
    from guestcpu.errors import GuestCpuError
    from guestcpu.fleet import parsing

    inputs = [("h.json", b"{}", None)] * 20
    with pytest.raises(GuestCpuError, match=r"ended without an answer .*nothing was added"):
        list(parsing.records(inputs, _DiesWhenUnpickled(), (), 2, lambda d: {}))  # type: ignore[arg-type]


def test_workers_only_where_cores_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    from guestcpu.fleet import parsing

    monkeypatch.setattr(parsing.os, "sched_getaffinity", lambda _pid: set(range(2)))
    assert parsing.worker_count(10_000) == 0  # two cores: the caller alone is faster (docs/performance.md)
    monkeypatch.setattr(parsing.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert parsing.worker_count(10_000) == parsing.MAX_WORKERS
    assert parsing.worker_count(parsing.PARALLEL_FROM - 1) == 0
    monkeypatch.setattr(parsing.os, "sched_getaffinity", lambda _pid: set(range(4)))
    assert parsing.worker_count(10_000) == 3


def test_domcapabilities_blockers_are_kept_per_model(store: Store, catalog: Catalog) -> None:
    """libvirt 9+ names each unusable model's blockers; they become the profile's QEMU blockers."""
    from fleet_support import DATA

    data = (DATA / "xml" / "domcapabilities-core-i7-7700.xml").read_bytes()
    api.add_hosts(store, [("domcapabilities-core-i7-7700.xml", data, "i7")], catalog, cluster="libvirt")
    view = api.load_view(store)
    caps = view.caps(view.host("i7"), "kvm")
    assert caps is not None
    ibrs = caps.model("Skylake-Client-IBRS")
    assert ibrs is not None and not ibrs.usable and ibrs.blockers
    sky = caps.model("Skylake-Client")
    assert sky is not None and sky.usable and sky.blockers == ()
    result = api.baseline(store, catalog, cluster="libvirt")
    assert [h.verified for h in result.hosts] == [False]  # libvirt's view only: judged, not verified
    assert result.hosts[0].result != "incompatible"


@pytest.mark.parametrize("plant", ["open-folder", "symlink", "open-file"])
def test_a_sqlite_inventory_another_user_could_write_is_refused(plant: str, tmp_path: Path) -> None:
    from guestcpu.fleet.store import StoreError, open_store

    folder = tmp_path / "inventory"
    folder.mkdir(mode=0o700)
    db = folder / "fleet.db"
    if plant == "open-folder":
        folder.chmod(0o777)
    elif plant == "symlink":
        db.symlink_to(tmp_path / "elsewhere.db")
    else:
        db.write_bytes(b"")
        db.chmod(0o666)
    with pytest.raises(StoreError, match="is not safe to use") as info:
        open_store(f"sqlite:///{db}")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "elsewhere.db").exists()
