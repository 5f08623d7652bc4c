"""The fleet as a Python API: what ``guestcpu fleet …`` and ``guestcpu serve`` both call.

Every function takes an open ``Store`` (``open_store``), does its work in one
transaction and returns a typed result whose ``to_json()`` is exactly the CLI's
``--json`` output.  Bad input raises ``GuestCpuError`` (``InputError``, ``StoreError``)
before anything is committed.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.fleet import parsing, retire
from guestcpu.fleet.baseline import BaselineJson, FleetBaseline, fleet_baseline
from guestcpu.fleet.inputs import HostRecord, record_from_bytes
from guestcpu.fleet.inventory import AddedHostJson, AddResult, Inventory
from guestcpu.fleet.levels import FleetLevels, LevelsJson, fleet_levels
from guestcpu.fleet.placement import Placement, PlacementCounts, PlacementCountsJson, PlacementJson
from guestcpu.fleet.placement import where as where_pins
from guestcpu.fleet.placement import where_counts as placement_counts
from guestcpu.fleet.retire import HostsRemoved, HostsRemovedJson, PinsRemoved, PinsRemovedJson
from guestcpu.fleet.store import Store, StoreError, open_store
from guestcpu.fleet.view import FleetView, HostJson, HostReason, PinView
from guestcpu.fleet.whatif import WhatIf, WhatIfJson
from guestcpu.fleet.whatif import what_if as whatif_answer
from guestcpu.lifecycle.pin import Pin, pin_from_document

# the *Json TypedDicts: the shapes of the results' to_json() (the CLI's --json, the service's bodies and schemas)
__all__ = [
    "AddReport", "AddReportJson", "BaselineJson", "Frozen", "FrozenJson", "HistoryJson", "HostHistory", "HostList",
    "HostListJson", "HostsRemoved", "HostsRemovedJson", "LevelsJson", "PinAddedJson", "PinsRemoved",
    "PinsRemovedJson", "PlacementCountsJson", "PlacementJson", "Store", "StoreError", "WhatIfJson", "add_hosts",
    "add_pin", "baseline", "freeze", "history", "hosts", "levels", "load_view", "open_store", "remove_hosts",
    "remove_pins", "what_if", "where", "where_counts",
]

#: hosts per multi-row insert of a bulk load
BULK_ROWS = 500
#: one input: (where it came from, its bytes, the host name to use or None for the file's own)
HostInput = parsing.HostInput


class AddReportJson(TypedDict):
    """``AddReport.to_json()``: the body of ``fleet add --json``."""

    hosts: list[AddedHostJson]
    added: int
    replaced: int
    non_operational: list[str]


@dataclass(frozen=True)
class AddReport:
    added: tuple[AddResult, ...]

    def to_json(self) -> AddReportJson:
        return {"hosts": [a.to_json() for a in self.added],
                "added": sum(1 for a in self.added if not a.replaced),
                "replaced": sum(1 for a in self.added if a.replaced),
                "non_operational": [a.host for a in self.added if not a.operational]}


def add_hosts(
    store: Store, inputs: Iterable[HostInput], catalog: Catalog, *, cluster: str | None = None,
    tags: Sequence[str] = (), force: bool = False, progress: Callable[[], None] | None = None,
    workers: int = 0,
) -> AddReport:
    """Add or replace hosts from capture documents or domcapabilities XML, all or none.

    ``workers``: processes that parse the inputs (``fleet.parsing``; 0: this one).

    Hosts are written in batches: the new ones of a batch in three multi-row
    statements, the known ones one by one (their old state becomes history).  Each
    distinct QEMU offer is checked against its schema once; the results come in the
    order of ``inputs``.
    """
    results: list[AddResult] = []
    seen: set[str] = set()
    batch: list[HostRecord] = []
    with store.transaction() as session, gc_paused():
        inventory = Inventory(session)
        for record in _records(inputs, catalog, inventory, workers):
            if record.name in seen:
                raise StoreError(f"host {record.name} is given twice; nothing was added")
            seen.add(record.name)
            batch.append(record)
            if len(batch) >= BULK_ROWS:
                results += inventory.add_hosts(batch, cluster=cluster, tags=tags, force=force)
                batch = []
            if progress is not None:
                progress()
        if batch:
            results += inventory.add_hosts(batch, cluster=cluster, tags=tags, force=force)
    return AddReport(tuple(results))


def _records(inputs: Iterable[HostInput], catalog: Catalog, inventory: Inventory, workers: int
             ) -> Iterator[HostRecord]:
    """Each input's host record, in order; each distinct profile is checked once (stored ones not again)."""
    stored = inventory.known_digests()
    if workers > 0:
        yield from parsing.records(inputs, catalog, stored, workers, lambda digest: stored[digest].document)
        return
    known: dict[str, object] = dict(stored)
    documents: dict[str, Mapping[str, Any]] = {}
    for source, data, name in inputs:
        record = record_from_bytes(data, source, catalog, name=name, known_digests=known)
        known.update((p.digest, None) for p in record.profiles.values())
        yield parsing.sharing_documents(record, documents, lambda digest: stored[digest].document)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a load (reference counting still frees).

    A capture parses into tens of thousands of containers, and without this the
    collector runs over everything alive again and again: it was 60 % of the time of a
    10,000-host add.  Parsed documents have no cycles, so nothing is held longer.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PinAddedJson(TypedDict):
    """``PinAdded.to_json()``: the body of ``fleet add-pin --json``."""

    pin: str
    fingerprint: str
    host: str | None
    replaced: bool


@dataclass(frozen=True)
class PinAdded:
    name: str
    fingerprint: str
    host: str | None
    replaced: bool

    def to_json(self) -> PinAddedJson:
        return {"pin": self.name, "fingerprint": self.fingerprint, "host": self.host, "replaced": self.replaced}


def add_pin(store: Store, name: str, pin: Pin, *, host: str | None = None) -> PinAdded:
    with store.transaction() as session:
        replaced = Inventory(session).add_pin(name, pin, host)
    return PinAdded(name, pin.fingerprint, host, replaced)


def add_pins(store: Store, items: Iterable[tuple[str, Pin, str | None]]) -> list[PinAdded]:
    """Store many guests' pins (name, pin, host or None) in one transaction, all or none."""
    added: list[PinAdded] = []
    with store.transaction() as session, gc_paused():
        inventory = Inventory(session)
        batch: list[tuple[str, Pin, str | None]] = []
        seen: set[str] = set()
        for item in [*items, None]:
            if item is not None:
                if item[0] in seen:
                    raise InputError(f"pin {item[0]} is given twice; nothing was stored")
                seen.add(item[0])
                batch.append(item)
            if batch and (item is None or len(batch) >= BULK_ROWS):
                replaced = inventory.add_pins(batch)
                added += [PinAdded(n, p.fingerprint, h, r) for (n, p, h), r in zip(batch, replaced, strict=True)]
                batch = []
    return added


def remove_hosts(store: Store, names: Sequence[str]) -> HostsRemoved:
    """Retire hosts, all or none: with each go its history, the profiles no other host has and its cluster
    when left empty (unless frozen); its guests' pins stay, with no host (``fleet.retire``)."""
    with store.transaction() as session:
        return retire.remove_hosts(session, names)


def remove_pins(store: Store, names: Sequence[str]) -> PinsRemoved:
    """Forget guests' pins, all or none."""
    with store.transaction() as session:
        return retire.remove_pins(session, names)


def load_view(store: Store, *, with_pins: bool = True) -> FleetView:
    with store.transaction() as session:
        return Inventory(session).load_view(with_pins=with_pins)


def baseline(
    store: Store, catalog: Catalog, *, cluster: str | None = None, accel: str = "kvm", machine: str | None = None,
) -> FleetBaseline:
    return fleet_baseline(load_view(store, with_pins=False), catalog, accel=accel, cluster=cluster, machine=machine)


def resolve_pins(view: FleetView, names: Sequence[str], files: Sequence[tuple[str, Any]] = ()) -> list[PinView]:
    """Stored pins by name plus pin documents given as (source, parsed JSON)."""
    found = view.pins_named(list(names)) if names else []
    found += [PinView(source, pin_from_document(doc, source)) for source, doc in files]
    return found


def where(
    store: Store, names: Sequence[str] = (), *, files: Sequence[tuple[str, Any]] = (), cluster: str | None = None,
    purpose: str = "migrate",
) -> Placement:
    """Which hosts can take each pin (stored ``names`` and pin ``files``; none given: every stored pin)."""
    view = load_view(store)
    pins = resolve_pins(view, names, files) if (names or files) else list(view.pins)
    return where_pins(view.in_cluster(cluster), pins, purpose=purpose)


def where_counts(
    store: Store, names: Sequence[str] = (), *, files: Sequence[tuple[str, Any]] = (), cluster: str | None = None,
    purpose: str = "migrate",
) -> PlacementCounts:
    """How many hosts can take each pin: ``where`` at fleet scale, without the per-host reasons."""
    view = load_view(store)
    pins = resolve_pins(view, names, files) if (names or files) else list(view.pins)
    return placement_counts(view.in_cluster(cluster), pins, purpose=purpose)


class StateJson(TypedDict):
    seq: int
    recorded_at: str
    source: str
    qemu_version: str
    kernel: str
    accels: list[str]
    #: what differs from the state before (empty for the first)
    changes: list[str]


class HistoryJson(TypedDict):
    """``HostHistory.to_json()``: the body of ``fleet history --json``."""

    host: str
    cluster: str
    states: list[StateJson]


@dataclass(frozen=True)
class StateEntry:
    seq: int
    recorded_at: str
    source: str
    qemu_version: str
    kernel: str
    accels: tuple[str, ...]
    changes: tuple[str, ...]

    def to_json(self) -> StateJson:
        return {"seq": self.seq, "recorded_at": self.recorded_at, "source": self.source,
                "qemu_version": self.qemu_version, "kernel": self.kernel, "accels": list(self.accels),
                "changes": list(self.changes)}


@dataclass(frozen=True)
class HostHistory:
    host: str
    cluster: str
    states: tuple[StateEntry, ...]

    def to_json(self) -> HistoryJson:
        return {"host": self.host, "cluster": self.cluster, "states": [s.to_json() for s in self.states]}


def history(store: Store, host: str) -> HostHistory:
    with store.transaction() as session:
        inventory = Inventory(session)
        row = inventory.host(host)
        states = tuple(
            StateEntry(s.seq, s.recorded_at.isoformat(timespec="seconds"), s.source, s.qemu_version, s.kernel,
                       tuple(a for a, p in (("kvm", s.kvm_profile_id), ("tcg", s.tcg_profile_id)) if p is not None),
                       tuple(s.changes))
            for s in inventory.history(host)
        )
        return HostHistory(row.name, row.cluster.name, states)


class ClusterJson(TypedDict):
    name: str
    #: the name of the pin the cluster is frozen to (None: not frozen)
    frozen_pin: str | None


class HostListJson(TypedDict):
    """``HostList.to_json()``: the body of ``fleet hosts --json``."""

    hosts: list[HostJson]
    clusters: list[ClusterJson]


@dataclass(frozen=True)
class HostList:
    hosts: tuple[HostJson, ...]
    clusters: dict[str, str | None]

    def to_json(self) -> HostListJson:
        return {"hosts": list(self.hosts), "clusters": [{"name": c, "frozen_pin": p}
                                                         for c, p in sorted(self.clusters.items())]}


def hosts(store: Store, *, cluster: str | None = None) -> HostList:
    view = load_view(store, with_pins=False).in_cluster(cluster)
    clusters: dict[str, str | None] = {h.cluster: None for h in view.hosts}
    clusters.update({c: p for c, p in view.frozen.items() if cluster in (None, c)})
    return HostList(tuple(h.to_json() for h in view.hosts), clusters)


def levels(store: Store, catalog: Catalog, *, cluster: str | None = None, accel: str = "kvm") -> FleetLevels:
    return fleet_levels(load_view(store, with_pins=False), catalog, accel=accel, cluster=cluster)


def what_if(
    store: Store, catalog: Catalog, *, add: Sequence[HostInput] = (), remove: Sequence[str] = (),
    upgrade: Sequence[HostInput] = (), cluster: str | None = None, accel: str = "kvm",
) -> WhatIf:
    """The fleet with hosts added, retired or upgraded, on paper: nothing is stored.

    ``upgrade`` inputs name the host they replace as their third element.
    """
    view = load_view(store)
    known = dict(view.profiles)
    added = [record_from_bytes(data, source, catalog, name=name, known_digests=known) for source, data, name in add]
    upgraded = []
    for source, data, name in upgrade:
        if not name:
            raise InputError(f"--upgrade {source}: say which host it upgrades (HOST=FILE)")
        view.host(name)
        upgraded.append(record_from_bytes(data, source, catalog, name=name, known_digests=known))
    return whatif_answer(view, catalog, add=added, remove=remove, upgrade=upgraded, cluster=cluster, accel=accel)


class FrozenJson(TypedDict):
    """``Frozen.to_json()``: the body of ``fleet freeze --json``."""

    cluster: str
    pin_name: str
    fingerprint: str
    model: str
    machine: str
    required: list[str]
    #: the pin document (its schema: ``guestcpu schema pin``)
    pin: dict[str, Any]
    baseline: BaselineJson
    refused: list[HostReason]


@dataclass(frozen=True)
class Frozen:
    cluster: str
    pin_name: str
    pin: Pin
    baseline: FleetBaseline
    #: hosts of the cluster that cannot give it now (with why), marked non-operational
    refused: tuple[tuple[str, str], ...]

    def to_json(self) -> FrozenJson:
        from guestcpu.lifecycle.pin import pin_to_document

        return {"cluster": self.cluster, "pin_name": self.pin_name, "fingerprint": self.pin.fingerprint,
                "model": self.pin.abi.model, "machine": self.pin.abi.machine,
                "required": self.pin.abi.required, "pin": pin_to_document(self.pin),
                "baseline": self.baseline.to_json(),
                "refused": [{"host": h, "reason": r} for h, r in self.refused]}


def freeze(
    store: Store, catalog: Catalog, cluster: str, *, accel: str = "kvm", machine: str | None = None,
) -> Frozen:
    """Fix the cluster's CPU (its baseline, as a pin); from then on ``add_hosts`` admits only hosts that give it."""
    from guestcpu.fleet.cpu_pin import newest_common_machine, overrides_of, pin_from_caps
    from guestcpu.lifecycle.compat import check_destination

    with store.transaction() as session:
        inventory = Inventory(session)
        inventory.cluster(cluster)  # unknown cluster: one clear error
        view = inventory.load_view(with_pins=False).in_cluster(cluster)
        result = fleet_baseline(view, catalog, accel=accel, cluster=cluster, machine=machine)
        # QEMU's own expansion (a capture) over libvirt's cpu_map view (domcapabilities) for the pinned model
        ordered = sorted((h for h in view.hosts if accel in h.profiles),
                         key=lambda h: not view.profiles[h.profiles[accel]].verified)
        caps_list = [view.profiles[h.profiles[accel]].caps for h in ordered]
        chosen = machine or newest_common_machine(caps_list)
        pin = pin_from_caps(caps_list[0], result.model, overrides_of(result.cpu, catalog), chosen, catalog,
                            note=f"the frozen CPU of cluster {cluster}: its baseline over {len(caps_list)} hosts")
        refused = []
        for host in view.hosts:
            verdict = check_destination(pin, view.caps(host, accel), purpose="migrate", destination=host.name,
                                        unavailable=host.unavailable.get(accel))
            if not verdict.ok:
                refused.append((host.name, "; ".join(verdict.reasons)))
        if refused:
            raise InputError(
                f"cluster {cluster}: its baseline cannot be pinned for every host ("
                + "; ".join(f"{h}: {r}" for h, r in refused) + "); nothing was frozen")
        name = f"cluster:{cluster}"
        inventory.freeze(cluster, name, pin)
    return Frozen(cluster, name, pin, result, tuple(refused))
