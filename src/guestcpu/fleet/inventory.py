"""Reading and writing the inventory inside one transaction (the store's I/O, no answers here).

``Inventory`` wraps a session: it adds hosts (replacing their current state and
keeping the old one as history, with what changed), adds pins, freezes clusters and
loads a ``FleetView`` for the answers.  Nothing here commits: the caller's
``Store.transaction()`` does, whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from typing_extensions import TypedDict

from guestcpu.errors import InputError
from guestcpu.fleet import schema as db
from guestcpu.fleet.inputs import HostRecord, document_digest
from guestcpu.fleet.inputs import Profile as ProfileInput
from guestcpu.fleet.view import FleetView, HostView, PinView, ProfileView, unknown
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.pin import Pin, pin_from_document, pin_to_document
from guestcpu.qemu.caps import QemuCaps, caps_from_document
from guestcpu.qemu.offer import supported_features

DEFAULT_CLUSTER = "default"
#: the members of a pin document that belong to its guest, not to its CPU: a guest's own row keeps them
PIN_OWN_KEYS = ("name", "uuid")


def stored_pin(body: Mapping[str, Any], name: str | None, uuid: str | None, source: str) -> Pin:
    """A stored pin: its shared body checked as any pin document is, with the guest's name and UUID."""
    return with_guest(pin_from_document(dict(body), source), name, uuid)


def with_guest(pin: Pin, name: str | None, uuid: str | None) -> Pin:
    return pin if (pin.name, pin.uuid) == (name, uuid) else replace(pin, name=name, uuid=uuid)


class AddedHostJson(TypedDict):
    """``AddResult.to_json()``."""

    host: str
    cluster: str
    replaced: bool
    operational: bool
    changes: list[str]
    note: str


@dataclass(frozen=True)
class AddResult:
    host: str
    cluster: str
    replaced: bool
    operational: bool
    changes: tuple[str, ...]
    note: str = ""

    def to_json(self) -> AddedHostJson:
        return {"host": self.host, "cluster": self.cluster, "replaced": self.replaced,
                "operational": self.operational, "changes": list(self.changes), "note": self.note}


class AdmissionError(InputError):
    """A host that cannot give its frozen cluster's CPU (add it with --force to mark it non-operational)."""


def _profile_changes(accel: str, old: QemuCaps, new: QemuCaps) -> list[str]:
    changes = []
    if old.qemu_version != new.qemu_version:
        changes.append(f"{accel}: QEMU {old.qemu_version or '?'} -> {new.qemu_version or '?'}")
    before, after = supported_features(old), supported_features(new)
    if before - after:
        changes.append(f"{accel}: no longer offers {', '.join(sorted(before - after))}")
    if after - before:
        changes.append(f"{accel}: now offers {', '.join(sorted(after - before))}")
    old_models, new_models = {m.name for m in old.models}, {m.name for m in new.models}
    if new_models - old_models:
        changes.append(f"{accel}: new CPU models {', '.join(sorted(new_models - old_models))}")
    if old_models - new_models:
        changes.append(f"{accel}: CPU models gone {', '.join(sorted(old_models - new_models))}")
    old_usable = {m.name for m in old.models if m.usable}
    new_usable = {m.name for m in new.models if m.usable}
    if old_usable - new_usable & new_models:
        changes.append(f"{accel}: models now blocked {', '.join(sorted((old_usable - new_usable) & new_models))}")
    if (new_usable - old_usable) & old_models:
        changes.append(f"{accel}: models now usable {', '.join(sorted((new_usable - old_usable) & old_models))}")
    return changes


def _facts_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for accel in sorted(set(old) | set(new)):
        before, after = dict(old.get(accel) or {}), dict(new.get(accel) or {})
        for key in sorted(set(before) | set(after)):
            if key in ("binary", "mtime", "size", "host_cpuid", "kvm_cpuid") or before.get(key) == after.get(key):
                continue
            changes.append(f"{accel}: {key} {before.get(key)!r} -> {after.get(key)!r}")
    return sorted(set(changes))


class Inventory:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._profiles: dict[str, db.Profile] | None = None
        self._clusters: dict[str, db.Cluster] = {}
        self._caps: dict[str, QemuCaps] = {}
        self._bodies: dict[str, db.PinBody] = {}
        self._stored_names: dict[str, set[str]] = {}

    def _names(self, column: Any) -> set[str]:
        """Every stored name of ``column`` (hosts' or pins'), read once a transaction.

        Batches ask whether their names are stored; one ``IN (…500 names)`` query a batch
        is quadratic on PostgreSQL while the table grows in the same transaction (its
        statistics still say empty, so each is a sequential scan): 16 of 30 s for 60,000 pins.
        """
        key = str(column)
        if key not in self._stored_names:
            self._stored_names[key] = set(self.session.scalars(select(column)))
        return self._stored_names[key]

    def _now_stored(self, column: Any, name: str) -> None:
        """Keep ``_names`` true after a row of that name is made here."""
        self._stored_names.get(str(column), set()).add(name)

    # -- profiles -------------------------------------------------------------------
    def known_digests(self) -> dict[str, db.Profile]:
        if self._profiles is None:
            self._profiles = {p.digest: p for p in self.session.scalars(select(db.Profile))}
        return self._profiles

    def _profile_row(self, profile: ProfileInput) -> db.Profile:
        known = self.known_digests()
        row = known.get(profile.digest)
        if row is None:
            row = db.Profile(digest=profile.digest, accel=profile.accel, qemu_version=profile.qemu_version,
                             verified=profile.verified, document=dict(profile.document))
            self.session.add(row)
            known[profile.digest] = row
        return row

    def caps_of(self, row: db.Profile) -> QemuCaps:
        found = self._caps.get(row.digest)
        if found is None:
            # validated against the schema when it was added; a stored profile is read fast (a fleet has many)
            found = self._caps[row.digest] = caps_from_document(dict(row.document), f"stored profile {row.digest}",
                                                                check=False)
        return found

    # -- clusters and hosts -----------------------------------------------------------
    def cluster(self, name: str, *, create: bool = False) -> db.Cluster:
        found = self._clusters.get(name) or self.session.scalars(
            select(db.Cluster).where(db.Cluster.name == name)).first()
        if found is None:
            if not create:
                raise unknown("cluster", name, self.session.scalars(select(db.Cluster.name)).all())
            found = db.Cluster(name=name)
            self.session.add(found)
        self._clusters[name] = found
        return found

    def host(self, name: str) -> db.Host:
        found = self.session.scalars(select(db.Host).where(db.Host.name == name)).first()
        if found is None:
            raise unknown("host", name, self.session.scalars(select(db.Host.name)).all())
        return found

    def frozen_pin(self, cluster: db.Cluster) -> Pin | None:
        row = cluster.frozen_pin
        if row is None:
            return None
        source = f"the frozen CPU of cluster {cluster.name}"
        return stored_pin(row.body.document, row.guest_name, row.guest_uuid, source)

    def add_host(
        self, record: HostRecord, *, cluster: str | None = None, tags: Sequence[str] = (), force: bool = False,
    ) -> AddResult:
        """Add ``record``, or make it the current state of the host of that name (the old one stays as history)."""
        host = self.session.scalars(select(db.Host).where(db.Host.name == record.name)).first()
        cluster_name = cluster or (host.cluster.name if host is not None else DEFAULT_CLUSTER)
        cluster_row = self.cluster(cluster_name, create=True)
        operational, note = self._admission(record, cluster_name, self.frozen_pin(cluster_row), force)
        rows = {accel: self._profile_row(profile) for accel, profile in record.profiles.items()}
        changes: list[str] = []
        seq = 1
        replaced = host is not None
        if host is None:
            host = db.Host(name=record.name, cluster=cluster_row, tags=sorted(set(tags)), operational=operational,
                           status_note=note)
            self.session.add(host)
            self._now_stored(db.Host.name, record.name)
        else:
            previous = host.current
            if previous is not None:
                seq = previous.seq + 1
                changes = self._changes(previous, record, rows)
            if host.cluster.name != cluster_name:
                changes.append(f"cluster {host.cluster.name} -> {cluster_name}")
                host.cluster = cluster_row
            if tags:
                host.tags = sorted(set(host.tags) | set(tags))
            host.operational, host.status_note = operational, note
        state = db.HostState(
            host=host, seq=seq, source=record.source, hostname=record.hostname, kernel=record.kernel,
            captured_at=record.captured_at, qemu_version=record.qemu_version, cpu=dict(record.cpu),
            facts=dict(record.facts), unavailable=dict(record.unavailable), kvm_profile=rows.get("kvm"),
            tcg_profile=rows.get("tcg"), changes=changes,
        )
        self.session.add(state)
        host.current = state
        return AddResult(record.name, cluster_name, replaced, operational, tuple(changes), note)

    def add_hosts(
        self, records: Sequence[HostRecord], *, cluster: str | None = None, tags: Sequence[str] = (),
        force: bool = False,
    ) -> list[AddResult]:
        """``add_host`` for each of ``records``, in their order: the new hosts in one go (``_insert_new``)."""
        names = [r.name for r in records]
        stored = self._names(db.Host.name)
        existing = {name for name in names if name in stored}
        new = [r for r in records if r.name not in existing]
        done = {a.host: a for a in self._insert_new(new, cluster=cluster, tags=tags, force=force)} if new else {}
        stored.update(r.name for r in new)
        for record in records:
            if record.name in existing:
                done[record.name] = self.add_host(record, cluster=cluster, tags=tags, force=force)
        return [done[name] for name in names]

    def _insert_new(
        self, records: Sequence[HostRecord], *, cluster: str | None, tags: Sequence[str], force: bool,
    ) -> list[AddResult]:
        """Add hosts that are not in the store yet, in three multi-row statements (a bulk load).

        The same rules as ``add_host`` (admission into a frozen cluster, shared profiles).
        """
        cluster_name = cluster or DEFAULT_CLUSTER
        cluster_row = self.cluster(cluster_name, create=True)
        frozen = self.frozen_pin(cluster_row)
        admitted = [self._admission(record, cluster_name, frozen, force) for record in records]
        profiles = [{a: self._profile_row(p) for a, p in record.profiles.items()} for record in records]
        self.session.flush()  # ids of the cluster and of new profiles
        host_ids = self.session.scalars(
            insert(db.Host).returning(db.Host.id, sort_by_parameter_order=True),
            [{"name": r.name, "cluster_id": cluster_row.id, "tags": sorted(set(tags)), "operational": ok,
              "status_note": note, "created_at": db.utcnow()} for r, (ok, note) in zip(records, admitted, strict=True)],
        ).all()
        now = db.utcnow()
        state_ids = self.session.scalars(
            insert(db.HostState).returning(db.HostState.id, sort_by_parameter_order=True),
            [{"host_id": host_id, "seq": 1, "recorded_at": now, "source": r.source, "hostname": r.hostname,
              "kernel": r.kernel, "captured_at": r.captured_at, "qemu_version": r.qemu_version, "cpu": dict(r.cpu),
              "facts": dict(r.facts), "unavailable": dict(r.unavailable),
              "kvm_profile_id": rows["kvm"].id if "kvm" in rows else None,
              "tcg_profile_id": rows["tcg"].id if "tcg" in rows else None, "changes": []}
             for host_id, r, rows in zip(host_ids, records, profiles, strict=True)],
        ).all()
        self.session.execute(  # ORM bulk UPDATE by primary key
            update(db.Host), [{"id": h, "current_state_id": s} for h, s in zip(host_ids, state_ids, strict=True)])
        return [AddResult(r.name, cluster_name, False, ok, (), note)
                for r, (ok, note) in zip(records, admitted, strict=True)]

    def _admission(self, record: HostRecord, cluster: str, frozen: Pin | None, force: bool) -> tuple[bool, str]:
        """(operational, why not): can ``record`` give the frozen CPU of its cluster?"""
        if frozen is None:
            return True, ""
        accel = frozen.abi.accel
        profile = record.profiles.get(accel)
        caps = None
        if profile is not None:  # hosts of one kind share a profile: read it once
            caps = self._caps.get(profile.digest) or self._caps.setdefault(
                profile.digest, profile.caps(f"{record.name} ({accel})"))
        verdict = check_destination(frozen, caps, purpose="migrate", destination=record.name,
                                    unavailable=record.unavailable.get(accel))
        if verdict.ok:
            return True, ""
        why = "; ".join(verdict.reasons)
        if not force:
            raise AdmissionError(
                f"host {record.name} cannot give the frozen CPU of cluster {cluster} ({frozen.abi.model}): {why}; "
                "nothing was added (use --force to add it as non-operational)"
            )
        return False, f"cannot give the frozen CPU of cluster {cluster}: {why}"

    def _changes(self, previous: db.HostState, record: HostRecord, rows: Mapping[str, db.Profile]) -> list[str]:
        changes = []
        if previous.kernel != record.kernel:
            changes.append(f"kernel {previous.kernel or '?'} -> {record.kernel or '?'}")
        if previous.qemu_version != record.qemu_version:
            changes.append(f"QEMU {previous.qemu_version or '?'} -> {record.qemu_version or '?'}")
        changes += _facts_changes(previous.facts, record.facts)
        for accel, old in (("kvm", previous.kvm_profile), ("tcg", previous.tcg_profile)):
            new = rows.get(accel)
            if old is None and new is not None:
                changes.append(f"{accel}: capabilities now available")
            elif old is not None and new is None:
                changes.append(f"{accel}: capabilities no longer available ({record.unavailable.get(accel, '?')})")
            elif old is not None and new is not None and old.digest != new.digest:
                changes += [c for c in _profile_changes(accel, self.caps_of(old), self.caps_of(new))
                            if not c.startswith(f"{accel}: QEMU ")]
        return changes

    # -- pins -------------------------------------------------------------------------
    def _pin_body(self, pin: Pin) -> tuple[db.PinBody, dict[str, Any]]:
        """The shared body row of ``pin`` (made if new), and the guest's own members (name, UUID)."""
        document = pin_to_document(pin)
        own = {key: document.pop(key, None) for key in PIN_OWN_KEYS}
        digest = document_digest(document)
        row = self._bodies.get(digest) or self.session.scalars(
            select(db.PinBody).where(db.PinBody.digest == digest)).first()
        if row is None:
            row = db.PinBody(digest=digest, document=document)
            self.session.add(row)
        self._bodies[digest] = row
        return row, own

    def _set_pin(self, row: db.Pin, pin: Pin) -> None:
        body, own = self._pin_body(pin)
        row.fingerprint, row.body, row.guest_name, row.guest_uuid = pin.fingerprint, body, own["name"], own["uuid"]

    def add_pin(self, name: str, pin: Pin, host: str | None = None) -> bool:
        """Store ``pin`` as ``name`` (replacing a pin of that name); True if it replaced one."""
        host_row = self.host(host) if host else None
        row = self.session.scalars(select(db.Pin).where(db.Pin.name == name)).first()
        replaced = row is not None
        if row is None:
            row = db.Pin(name=name)
            self._now_stored(db.Pin.name, name)
        self._set_pin(row, pin)  # before the row joins the session: its look-up would flush a row half set
        row.host = host_row
        self.session.add(row)
        return replaced

    def add_pins(self, items: Sequence[tuple[str, Pin, str | None]]) -> list[bool]:
        """``add_pin`` for each (name, pin, host), in order: the new names in one multi-row insert."""
        names = [name for name, _, _ in items]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})[:3]
            raise InputError(f"pin {', '.join(twice)} is given twice; nothing was stored")
        stored = self._names(db.Pin.name)
        existing = {name for name in names if name in stored}
        hosts = {h: self.host(h).id for h in {host for _, _, host in items if host}}
        new = [(name, pin, host, *self._pin_body(pin)) for name, pin, host in items if name not in existing]
        self.session.flush()  # ids of new bodies
        if new:
            self.session.execute(insert(db.Pin), [
                {"name": name, "fingerprint": pin.fingerprint, "body_id": body.id, "guest_name": own["name"],
                 "guest_uuid": own["uuid"], "host_id": hosts[host] if host else None, "added_at": db.utcnow()}
                for name, pin, host, body, own in new])
        stored.update(name for name, *_ in new)
        return [self.add_pin(name, pin, host) if name in existing else False for name, pin, host in items]

    def freeze(self, cluster: str, name: str, pin: Pin) -> None:
        row = self.cluster(cluster)
        pin_row = self.session.scalars(select(db.Pin).where(db.Pin.name == name)).first()
        if pin_row is None:
            pin_row = db.Pin(name=name)
            self._now_stored(db.Pin.name, name)
        self._set_pin(pin_row, pin)
        self.session.add(pin_row)
        row.frozen_pin = pin_row

    # -- reading ----------------------------------------------------------------------
    def history(self, name: str) -> list[db.HostState]:
        host = self.host(name)
        return list(self.session.scalars(
            select(db.HostState).where(db.HostState.host_id == host.id).order_by(db.HostState.seq)))

    def load_view(self, *, with_pins: bool = True) -> FleetView:
        rows = self.session.execute(
            select(db.Host.name, db.Cluster.name, db.Host.tags, db.Host.operational, db.Host.status_note,
                   db.HostState.kvm_profile_id, db.HostState.tcg_profile_id, db.HostState.unavailable,
                   db.HostState.qemu_version, db.HostState.source)
            .join(db.Cluster, db.Host.cluster_id == db.Cluster.id)
            .join(db.HostState, db.Host.current_state_id == db.HostState.id)
            .order_by(db.Host.name)
        ).all()
        wanted = {pid for r in rows for pid in (r[5], r[6]) if pid is not None}
        digests: dict[int, str] = {}
        profiles: dict[str, ProfileView] = {}
        if wanted:
            for profile in self.session.scalars(select(db.Profile).where(db.Profile.id.in_(wanted))):
                digests[profile.id] = profile.digest
                profiles[profile.digest] = ProfileView(profile.digest, self.caps_of(profile), profile.verified)
        hosts = []
        for name, cluster, tags, operational, note, kvm, tcg, unavailable, qemu_version, source in rows:
            accels = {accel: digests[pid] for accel, pid in (("kvm", kvm), ("tcg", tcg)) if pid is not None}
            hosts.append(HostView(name, cluster, tuple(tags or ()), operational, note, accels,
                                  dict(unavailable or {}), qemu_version, source))
        frozen = {
            c: p for c, p in self.session.execute(
                select(db.Cluster.name, db.Pin.name).join(db.Pin, db.Cluster.frozen_pin_id == db.Pin.id)).all()
        }
        pins: list[PinView] = []
        if with_pins:
            # A cluster's frozen CPU is not a guest: it takes no part in where and what-if.
            pin_rows = self.session.execute(
                select(db.Pin.name, db.Pin.body_id, db.Pin.guest_name, db.Pin.guest_uuid, db.Host.name)
                .outerjoin(db.Host, db.Pin.host_id == db.Host.id)
                .where(db.Pin.name.not_in(list(frozen.values()) or [""])).order_by(db.Pin.name)).all()
            # each distinct body is read and checked (fingerprint, seal) once, however many guests share it
            bodies: dict[int, Pin] = {}
            for body in self.session.scalars(select(db.PinBody).where(
                    db.PinBody.id.in_({r[1] for r in pin_rows}))) if pin_rows else ():
                bodies[body.id] = stored_pin(body.document, None, None, f"stored pin body {body.digest}")
            pins = [PinView(n, with_guest(bodies[b], guest, uuid), h) for n, b, guest, uuid, h in pin_rows]
        return FleetView(tuple(hosts), profiles, tuple(pins), frozen)
