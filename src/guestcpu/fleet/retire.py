"""``fleet remove`` and ``fleet remove-pin``: retire hosts and forget guests' pins, all or none (I/O).

What goes with a retired host: its history (every state it was added with), the
capability profiles no other host state has, and its cluster when that is left with no
host and is not frozen.  A frozen cluster stays, empty: its CPU still decides which
hosts it admits.  Pins of guests that ran on the host stay, with no host: the guests
are not gone, only where they run is no longer known (the result names them).  A
forgotten pin takes its document body along when no other pin shares it.

Nothing here commits: the caller's ``Store.transaction()`` does, whole or not at all;
an unknown name raises before anything is changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from typing_extensions import TypedDict

from guestcpu.errors import InputError
from guestcpu.fleet import schema as db
from guestcpu.fleet.view import unknown

#: ids per ``IN (...)``: well under SQLite's and PostgreSQL's limits on bound parameters
CHUNK = 1000
_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _names(names: Sequence[str], what: str) -> list[str]:
    wanted = list(dict.fromkeys(names))  # a name given twice is removed once
    if not wanted:
        raise InputError(f"say which {what} to remove")
    return wanted


class RemovedHostJson(TypedDict):
    host: str
    cluster: str
    history_states_removed: int
    pins_unplaced: list[str]


class HostsRemovedJson(TypedDict):
    """``HostsRemoved.to_json()``: the body of ``fleet remove --json``."""

    removed: list[RemovedHostJson]
    #: guests' pins whose host was retired (kept, with no host)
    pins_unplaced: list[str]
    clusters_removed: list[str]
    #: frozen clusters left with no host (kept, with their CPU)
    clusters_kept_empty: list[str]
    profiles_removed: int
    #: always False: a retired host's history goes with it
    history_kept: bool


class RemovedPinJson(TypedDict):
    pin: str
    fingerprint: str
    host: str | None


class PinsRemovedJson(TypedDict):
    """``PinsRemoved.to_json()``: the body of ``fleet remove-pin --json``."""

    removed: list[RemovedPinJson]


@dataclass(frozen=True)
class RemovedHost:
    host: str
    cluster: str
    #: how many states of its history went with it
    states: int
    #: the guests' pins that ran on it (they stay, with no host)
    pins_unplaced: tuple[str, ...]

    def to_json(self) -> RemovedHostJson:
        return {"host": self.host, "cluster": self.cluster, "history_states_removed": self.states,
                "pins_unplaced": list(self.pins_unplaced)}


@dataclass(frozen=True)
class HostsRemoved:
    hosts: tuple[RemovedHost, ...]
    #: clusters left with no host, removed with it
    clusters_removed: tuple[str, ...]
    #: frozen clusters left with no host: kept, with their CPU
    clusters_kept_empty: tuple[str, ...]
    #: capability profiles no remaining host state has
    profiles_removed: int

    @property
    def pins_unplaced(self) -> list[str]:
        return sorted(p for h in self.hosts for p in h.pins_unplaced)

    def to_json(self) -> HostsRemovedJson:
        return {"removed": [h.to_json() for h in self.hosts], "pins_unplaced": self.pins_unplaced,
                "clusters_removed": list(self.clusters_removed),
                "clusters_kept_empty": list(self.clusters_kept_empty),
                "profiles_removed": self.profiles_removed, "history_kept": False}


def remove_hosts(session: Session, names: Sequence[str]) -> HostsRemoved:
    """Retire the hosts named (all or none: an unknown name changes nothing)."""
    wanted = _names(names, "hosts")
    found: dict[str, tuple[int, str, int]] = {}
    for names_chunk in _chunks(wanted):
        for name, host_id, cluster, cluster_id in session.execute(
                select(db.Host.name, db.Host.id, db.Cluster.name, db.Cluster.id)
                .join(db.Cluster, db.Host.cluster_id == db.Cluster.id).where(db.Host.name.in_(names_chunk))):
            found[name] = (host_id, cluster, cluster_id)
    missing = [n for n in wanted if n not in found]
    if missing:
        raise unknown("host", missing[0], session.scalars(select(db.Host.name)).all())
    ids = [found[n][0] for n in wanted]
    pins: dict[int, list[str]] = {}
    states: dict[int, int] = {}
    profiles: set[int] = set()
    for chunk in _chunks(ids):
        for pin, pin_host in session.execute(select(db.Pin.name, db.Pin.host_id).where(db.Pin.host_id.in_(chunk))):
            if pin_host is not None:
                pins.setdefault(pin_host, []).append(pin)
        for host_id, count in session.execute(select(db.HostState.host_id, func.count()).where(
                db.HostState.host_id.in_(chunk)).group_by(db.HostState.host_id)):
            states[host_id] = int(count)
        for kvm, tcg in session.execute(select(db.HostState.kvm_profile_id, db.HostState.tcg_profile_id)
                                        .where(db.HostState.host_id.in_(chunk)).distinct()):
            profiles.update(p for p in (kvm, tcg) if p is not None)
    quick = {"synchronize_session": False}
    for chunk in _chunks(ids):
        session.execute(update(db.Pin).where(db.Pin.host_id.in_(chunk)).values(host_id=None),
                        execution_options=quick)
        session.execute(update(db.Host).where(db.Host.id.in_(chunk)).values(current_state_id=None),
                        execution_options=quick)
        session.execute(delete(db.HostState).where(db.HostState.host_id.in_(chunk)), execution_options=quick)
        session.execute(delete(db.Host).where(db.Host.id.in_(chunk)), execution_options=quick)
    orphans = sorted(profiles)
    for chunk in _chunks(sorted(profiles)):
        used = {p for kvm, tcg in session.execute(
            select(db.HostState.kvm_profile_id, db.HostState.tcg_profile_id)
            .where(db.HostState.kvm_profile_id.in_(chunk) | db.HostState.tcg_profile_id.in_(chunk)).distinct())
            for p in (kvm, tcg)}
        orphans = [p for p in orphans if p not in used]
    for chunk in _chunks(orphans):
        session.execute(delete(db.Profile).where(db.Profile.id.in_(chunk)), execution_options=quick)
    removed_clusters, kept = [], []
    for cluster_id, cluster, frozen in session.execute(
            select(db.Cluster.id, db.Cluster.name, db.Cluster.frozen_pin_id)
            .where(db.Cluster.id.in_(sorted({c for _, _, c in found.values()})))
            .where(~select(db.Host.id).where(db.Host.cluster_id == db.Cluster.id).exists())
            .order_by(db.Cluster.name)):
        if frozen is None:
            session.execute(delete(db.Cluster).where(db.Cluster.id == cluster_id), execution_options=quick)
            removed_clusters.append(cluster)
        else:
            kept.append(cluster)
    return HostsRemoved(
        tuple(RemovedHost(n, found[n][1], states.get(found[n][0], 0), tuple(sorted(pins.get(found[n][0], []))))
              for n in wanted),
        tuple(removed_clusters), tuple(kept), len(orphans))


@dataclass(frozen=True)
class RemovedPin:
    pin: str
    fingerprint: str
    #: the host the guest ran on, when known
    host: str | None

    def to_json(self) -> RemovedPinJson:
        return {"pin": self.pin, "fingerprint": self.fingerprint, "host": self.host}


@dataclass(frozen=True)
class PinsRemoved:
    pins: tuple[RemovedPin, ...]

    def to_json(self) -> PinsRemovedJson:
        return {"removed": [p.to_json() for p in self.pins]}


def remove_pins(session: Session, names: Sequence[str]) -> PinsRemoved:
    """Forget the guests' pins named (all or none); a cluster's frozen CPU is not a guest's and is refused."""
    wanted = _names(names, "pins")
    frozen = dict(session.execute(select(db.Pin.name, db.Cluster.name)
                                  .join(db.Cluster, db.Cluster.frozen_pin_id == db.Pin.id)).all())
    for name in wanted:
        if name in frozen:
            raise InputError(f"pin {name} is the frozen CPU of cluster {frozen[name]}, not a guest's pin; "
                             "nothing was removed")
    found: dict[str, tuple[int, str, str | None]] = {}
    bodies: set[int] = set()
    for names_chunk in _chunks(wanted):
        for pin_id, name, fingerprint, body, host in session.execute(
                select(db.Pin.id, db.Pin.name, db.Pin.fingerprint, db.Pin.body_id, db.Host.name)
                .outerjoin(db.Host, db.Pin.host_id == db.Host.id).where(db.Pin.name.in_(names_chunk))):
            found[name] = (pin_id, fingerprint, host)
            bodies.add(body)
    missing = [n for n in wanted if n not in found]
    if missing:
        known = [n for n in session.scalars(select(db.Pin.name)).all() if n not in frozen]
        raise unknown("pin", missing[0], known)
    quick = {"synchronize_session": False}
    for chunk in _chunks([found[n][0] for n in wanted]):
        session.execute(delete(db.Pin).where(db.Pin.id.in_(chunk)), execution_options=quick)
    # a pin body no other guest shares goes with its last guest
    orphans = sorted(bodies)
    for chunk in _chunks(sorted(bodies)):
        used = set(session.scalars(select(db.Pin.body_id).where(db.Pin.body_id.in_(chunk)).distinct()))
        orphans = [b for b in orphans if b not in used]
    for chunk in _chunks(orphans):
        session.execute(delete(db.PinBody).where(db.PinBody.id.in_(chunk)), execution_options=quick)
    return PinsRemoved(tuple(RemovedPin(n, found[n][1], found[n][2]) for n in wanted))
