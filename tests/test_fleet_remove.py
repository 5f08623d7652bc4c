"""``fleet remove`` and ``fleet remove-pin``: retiring hosts, forgetting pins, all or none (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fleet_support import THREE, kinds, model_pin, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError, UnknownNameError
from guestcpu.fleet import api
from guestcpu.fleet import schema as db
from guestcpu.fleet.store import Store, open_store

I7, GOLD, E5 = (n.lower() for n in THREE)


def count(store: Store, table: type[db.Base]) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def add(store: Store, catalog: Catalog, paths: list[Path], **options: Any) -> None:
    api.add_hosts(store, [(str(p), p.read_bytes(), None) for p in paths], catalog, **options)


def fill(store: Store, catalog: Catalog, workdir: Path) -> None:
    """rack1: the Core i7 and the Xeon Gold (with two states: TSX went away); rack2: the Xeon E5.
    Guests: web-1 and db-1 on the Core i7, batch on the Xeon E5, spare on no host."""
    add(store, catalog, write_captures(catalog, workdir, THREE[:2]), cluster="rack1")
    add(store, catalog, write_captures(catalog, workdir, (THREE[1],), variation="tsx-off"))
    add(store, catalog, write_captures(catalog, workdir, THREE[2:]), cluster="rack2")
    by_cpu = {k.cpu: k for k in kinds(catalog, THREE)}
    api.add_pin(store, "db-1", model_pin(by_cpu["Core-i7-8700"], "Skylake-Client-v3", catalog), host=I7)
    api.add_pin(store, "web-1", model_pin(by_cpu["Core-i7-8700"], "Haswell-v2", catalog), host=I7)
    api.add_pin(store, "batch", model_pin(by_cpu["Xeon-E5-2650-v3"], "Haswell-v2", catalog), host=E5)
    api.add_pin(store, "spare", model_pin(by_cpu["Xeon-E5-2650-v3"], "SandyBridge-v1", catalog))


@pytest.fixture
def store(fleet_db_url: str, tmp_path: Path, catalog: Catalog) -> Store:
    store = open_store(fleet_db_url)
    fill(store, catalog, tmp_path)
    return store


def referenced_profiles(store: Store) -> set[int]:
    with store.transaction() as session:
        rows = session.execute(select(db.HostState.kvm_profile_id, db.HostState.tcg_profile_id)).all()
    return {p for row in rows for p in row if p is not None}


def test_a_retired_host_takes_its_history_its_own_profiles_and_its_empty_cluster(store: Store) -> None:
    profiles_before = count(store, db.Profile)
    assert count(store, db.HostState) == 4
    result = api.remove_hosts(store, [GOLD, E5]).to_json()
    assert result["removed"] == [
        {"host": GOLD, "cluster": "rack1", "history_states_removed": 2, "pins_unplaced": []},
        {"host": E5, "cluster": "rack2", "history_states_removed": 1, "pins_unplaced": ["batch"]},
    ]
    assert result["pins_unplaced"] == ["batch"] and result["history_kept"] is False
    assert result["clusters_removed"] == ["rack2"] and result["clusters_kept_empty"] == []
    # the Gold's two KVM profiles and the E5's went; the TCG profile all hosts share stays for the Core i7
    assert result["profiles_removed"] == 3 == profiles_before - count(store, db.Profile)
    with store.transaction() as session:
        assert set(session.scalars(select(db.Profile.id))) == referenced_profiles(store)
        assert list(session.scalars(select(db.Cluster.name))) == ["rack1"]
    assert count(store, db.HostState) == 1 and count(store, db.Host) == 1
    with pytest.raises(UnknownNameError, match=f"unknown host '{GOLD}'"):
        api.history(store, GOLD)
    # the guests stay; the one whose host was retired has no host now
    assert [(p.name, p.host) for p in api.load_view(store).pins] == \
        [("batch", None), ("db-1", I7), ("spare", None), ("web-1", I7)]


def test_a_retired_host_can_come_back_with_a_new_history(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    api.remove_hosts(store, [GOLD])
    add(store, catalog, write_captures(catalog, tmp_path, (THREE[1],)), cluster="rack1")
    assert [s.seq for s in api.history(store, GOLD).states] == [1]


def test_an_unknown_host_removes_nothing(store: Store) -> None:
    with pytest.raises(UnknownNameError, match=f"unknown host 'xeon-gold-614'; did you mean '{GOLD}'") as info:
        api.remove_hosts(store, [E5, "xeon-gold-614"])
    assert isinstance(info.value, InputError)
    assert count(store, db.Host) == 3 and count(store, db.HostState) == 4
    assert [(p.name, p.host) for p in api.load_view(store).pins if p.name == "batch"] == [("batch", E5)]
    with pytest.raises(InputError, match="say which hosts to remove"):
        api.remove_hosts(store, [])


def test_a_frozen_cluster_left_empty_is_kept_with_its_cpu(store: Store, catalog: Catalog, tmp_path: Path) -> None:
    frozen = api.freeze(store, catalog, "rack2")
    result = api.remove_hosts(store, [E5, E5])  # a name given twice is removed once
    assert [h["host"] for h in result.to_json()["removed"]] == [E5]
    assert result.clusters_removed == () and result.clusters_kept_empty == ("rack2",)
    assert {"name": "rack2", "frozen_pin": "cluster:rack2"} in api.hosts(store).to_json()["clusters"]
    # it still admits hosts by its frozen CPU
    add(store, catalog, write_captures(catalog, tmp_path, THREE[2:]), cluster="rack2")
    assert api.hosts(store, cluster="rack2").hosts[0]["operational"]
    assert api.baseline(store, catalog, cluster="rack2").model == frozen.pin.abi.model


def test_removing_every_host(store: Store, catalog: Catalog) -> None:
    result = api.remove_hosts(store, [I7, GOLD, E5])
    assert result.pins_unplaced == ["batch", "db-1", "web-1"]
    assert sorted(result.clusters_removed) == ["rack1", "rack2"]
    assert count(store, db.Host) == count(store, db.HostState) == count(store, db.Profile) == 0
    assert count(store, db.Cluster) == 0 and count(store, db.Pin) == 4
    with pytest.raises(InputError, match="no host"):
        api.baseline(store, catalog)


def bodies_are_shared_and_none_is_left_over(store: Store) -> int:
    with store.transaction() as session:
        bodies = set(session.scalars(select(db.PinBody.id)))
        assert bodies == set(session.scalars(select(db.Pin.body_id)))
    return len(bodies)


def test_removing_pins(store: Store, catalog: Catalog) -> None:
    assert bodies_are_shared_and_none_is_left_over(store) == 3  # web-1 and batch: one Haswell-v2 body
    result = api.remove_pins(store, ["web-1", "spare"]).to_json()
    assert [(p["pin"], p["host"]) for p in result["removed"]] == [("web-1", I7), ("spare", None)]
    assert all(p["fingerprint"].startswith("sha256:") for p in result["removed"])
    assert [p.name for p in api.load_view(store).pins] == ["batch", "db-1"]
    assert bodies_are_shared_and_none_is_left_over(store) == 2  # web-1 went, its body stays for batch
    with pytest.raises(UnknownNameError, match="unknown pin 'db1'; did you mean 'db-1'"):
        api.remove_pins(store, ["batch", "db1"])
    assert count(store, db.Pin) == 2  # all or none: batch is still there
    api.freeze(store, catalog, "rack1")
    with pytest.raises(InputError, match="pin cluster:rack1 is the frozen CPU of cluster rack1, not a guest's pin"):
        api.remove_pins(store, ["cluster:rack1"])
    assert count(store, db.Pin) == 3
    api.remove_pins(store, ["batch", "db-1"])
    assert bodies_are_shared_and_none_is_left_over(store) == 1  # the frozen CPU's
    with pytest.raises(UnknownNameError, match="unknown pin 'x'; the inventory has no pins yet"):
        api.remove_pins(store, ["x"])


@pytest.mark.parametrize(("retired", "cluster"), [((GOLD,), None), ((I7,), "rack1"), ((E5,), None),
                                                  ((GOLD, I7, GOLD), "rack1")])
def test_remove_does_what_what_if_said(store: Store, catalog: Catalog, retired: tuple[str, ...],
                                       cluster: str | None) -> None:
    """After a real remove, the baseline and every guest's destinations are what 'what-if --remove' predicted."""
    predicted = api.what_if(store, catalog, remove=retired, cluster=cluster).to_json()
    assert predicted["removed"] == list(dict.fromkeys(retired))
    assert [h.host for h in api.remove_hosts(store, retired).hosts] == predicted["removed"]
    if predicted["baseline_after"] is None:
        with pytest.raises(InputError):
            api.baseline(store, catalog, cluster=cluster)
    else:
        assert api.baseline(store, catalog, cluster=cluster).to_json() == predicted["baseline_after"]
    placement = {p.name: p for p in api.where(store, cluster=cluster if predicted["baseline_after"] else None).pins}
    for guest in predicted["guests"]:
        now = placement[guest["pin"]]
        assert now.runs_on == (None if guest["runs_on"] in retired else guest["runs_on"])
        if predicted["baseline_after"] is not None:
            assert len([h for h in now.hosts if h != now.runs_on]) == guest["destinations_after"], guest


def test_what_if_retiring_a_whole_cluster(store: Store, catalog: Catalog) -> None:
    predicted = api.what_if(store, catalog, remove=[E5], cluster="rack2").to_json()
    assert predicted["baseline_before"]["cluster"] == "rack2"
    assert predicted["baseline_after"] is None
    assert predicted["baseline_after_error"] == "cluster 'rack2' has no host left"
    assert predicted["stranded"] == ["batch"]
    api.remove_hosts(store, [E5])
    with pytest.raises(UnknownNameError, match="unknown cluster 'rack2'"):
        api.baseline(store, catalog, cluster="rack2")


# -- the commands, on a real SQLite file, through the CLI's own error handling ---------------------------------
@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def invoke(*args: str) -> tuple[int, str, str]:
        from guestcpu.cli.main import main

        try:
            main(["fleet", *args])
            status = 0
        except SystemExit as exited:
            status = int(exited.code or 0)
        out = capsys.readouterr()
        return status, out.out, out.err

    return invoke


def test_the_commands(catalog: Catalog, tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    url = f"sqlite:///{tmp_path / 'inventory' / 'fleet.db'}"
    fill(open_store(url), catalog, tmp_path)
    assert run("remove", E5, "nope", "--db", url) == (1, "", "guestcpu: error: unknown host 'nope'\n")
    assert len(json.loads(run("hosts", "--db", url, "--json")[1])["hosts"]) == 3
    status, out, _ = run("remove", E5, GOLD, "--db", url)
    assert status == 0 and out.splitlines() == [
        f"removed {E5} from cluster rack2 (with its history: 1 state)",
        "  pin batch ran on it: kept, with no host",
        f"removed {GOLD} from cluster rack1 (with its history: 2 states)",
        "cluster rack2 has no host left: removed",
    ]
    assert json.loads(run("remove", I7, "--db", url, "--json")[1]) == {
        "removed": [{"host": I7, "cluster": "rack1", "history_states_removed": 1, "pins_unplaced": ["db-1", "web-1"]}],
        "pins_unplaced": ["db-1", "web-1"], "clusters_removed": ["rack1"], "clusters_kept_empty": [],
        "profiles_removed": 2, "history_kept": False,
    }
    status, out, _ = run("remove-pin", "web-1", "batch", "--db", url)
    assert status == 0 and out.startswith("removed pin web-1 (sha256:") and "which ran on" not in out
    assert run("remove-pin", "db-1", "web-1", "--db", url, "--json") == \
        (1, "", "guestcpu: error: unknown pin 'web-1'; did you mean 'db-1'?\n")
    status, out, _ = run("remove-pin", "db-1", "spare", "--db", url, "--json")
    assert [p["pin"] for p in json.loads(out)["removed"]] == ["db-1", "spare"]
    status, _, err = run("remove", "--db", url)
    assert status == 2 and "Missing argument 'HOST...'" in err
