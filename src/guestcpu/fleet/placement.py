"""``fleet where``: which hosts can take each guest exactly as pinned, and what stops the others (pure).

The judge is ``lifecycle.compat.check_destination``, the same verdict ``migrate-check``
gives: the guest's pinned CPU against the destination QEMU's capabilities under the
pin's accelerator.  At fleet scale the same rule runs as numpy row tests over the
distinct profiles first (``PlacementMatrix``): a pin fits a profile when every
feature it requires is one the profile's QEMU knows and can give (and, to migrate,
none of them blocks migration), the profile has the pin's machine type and, for a
custom pin, its ``-cpu`` model.  Pins the matrix cannot judge (host-passthrough and
maximum need an identical host, ``match='strict'`` needs the extra features) go to
``check_destination`` directly.  tests/test_fleet_placement.py holds the two equal
on every pair of a synthetic fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from typing_extensions import TypedDict

from guestcpu.fleet.inputs import UNKNOWN_QEMU_VERSION
from guestcpu.fleet.matrix import FeatureIndex, subset_matrix, widen
from guestcpu.fleet.view import FleetView, HostView, PinView
from guestcpu.lifecycle.compat import Verdict, VerdictJson, check_destination
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import known_features, non_migratable_features, supported_features


def matrix_can_judge(pin: Pin, purpose: str) -> bool:
    if pin.abi.mode != "custom" or (pin.policy.match == "strict" and pin.abi.accel == "kvm"):
        return False
    return not (purpose == "start" and pin.policy.recompute)


@dataclass
class PlacementMatrix:
    """``ok[i, j]``: pin ``i`` fits profile ``j`` of ``digests`` (all pins under one accelerator)."""

    accel: str
    digests: list[str]
    ok: npt.NDArray[np.bool_]


def profile_rows(
    caps_list: Sequence[QemuCaps], index: FeatureIndex, purpose: str
) -> list[list[str]]:
    rows = []
    for caps in caps_list:
        allowed = known_features(caps) & supported_features(caps)
        if purpose == "migrate":
            allowed -= non_migratable_features(caps)
        rows.append(sorted(allowed))
    return rows


def placement_matrix(
    pins: Sequence[Pin], digests: Sequence[str], caps_list: Sequence[QemuCaps], accel: str, purpose: str
) -> PlacementMatrix:
    """Fit of every pin (all judged by the matrix, all under ``accel``) on every profile, in numpy."""
    index = FeatureIndex()
    allowed_rows = profile_rows(caps_list, index, purpose)
    need = index.pack([pin.abi.required for pin in pins])
    have = widen(index.pack(allowed_rows), index.words)
    need = widen(need, index.words)
    fits = subset_matrix(need, have)
    machines = sorted({pin.abi.machine for pin in pins})
    models = sorted({pin.abi.model for pin in pins})
    machine_col = {m: i for i, m in enumerate(machines)}
    model_col = {m: i for i, m in enumerate(models)}
    has_machine = np.array([[caps.machine(m) is not None for m in machines] for caps in caps_list], dtype=np.bool_)
    has_model = np.array([[caps.has_model(m) for m in models] for caps in caps_list], dtype=np.bool_)
    arch_ok = np.array([caps.arch for caps in caps_list])
    pin_machine = np.array([machine_col[pin.abi.machine] for pin in pins], dtype=np.intp)
    pin_model = np.array([model_col[pin.abi.model] for pin in pins], dtype=np.intp)
    pin_arch = np.array([pin.abi.arch for pin in pins])
    if caps_list:
        fits &= has_machine.T[pin_machine]
        fits &= has_model.T[pin_model]
        fits &= pin_arch[:, None] == arch_ok[None, :]
    return PlacementMatrix(accel, list(digests), fits)


class RefusalJson(TypedDict):
    host: str
    reasons: list[str]
    #: migrate-check's verdict on this host (None: the host is non-operational only)
    verdict: VerdictJson | None


class PinPlacementJson(TypedDict):
    pin: str
    fingerprint: str
    accel: str
    runs_on: str | None
    #: the hosts that can take the guest exactly as pinned
    hosts: list[str]
    refused: list[RefusalJson]


class PlacementJson(TypedDict):
    """``Placement.to_json()``: the body of ``fleet where --json``."""

    purpose: str
    pins: list[PinPlacementJson]


class PinCountJson(TypedDict):
    pin: str
    hosts_ok: int


class PlacementCountsJson(TypedDict):
    """``PlacementCounts.to_json()``: the body of ``fleet where --count --json``."""

    purpose: str
    hosts: int
    pins: list[PinCountJson]


@dataclass(frozen=True)
class Refusal:
    host: str
    reasons: tuple[str, ...]
    verdict: Verdict | None = None

    def to_json(self) -> RefusalJson:
        return {"host": self.host, "reasons": list(self.reasons),
                "verdict": self.verdict.to_json() if self.verdict else None}


@dataclass(frozen=True)
class PinPlacement:
    name: str
    fingerprint: str
    accel: str
    runs_on: str | None
    hosts: tuple[str, ...]
    refused: tuple[Refusal, ...] = field(default_factory=tuple)

    def to_json(self) -> PinPlacementJson:
        return {
            "pin": self.name, "fingerprint": self.fingerprint, "accel": self.accel, "runs_on": self.runs_on,
            "hosts": list(self.hosts), "refused": [r.to_json() for r in self.refused],
        }


@dataclass(frozen=True)
class Placement:
    purpose: str
    pins: tuple[PinPlacement, ...]

    def to_json(self) -> PlacementJson:
        return {"purpose": self.purpose, "pins": [p.to_json() for p in self.pins]}


def _qemu_reason(pin: Pin, caps: QemuCaps, verdict: Verdict) -> str | None:
    pinned = str(pin.made_with.get("qemu_version", ""))
    known = caps.qemu_version and caps.qemu_version != UNKNOWN_QEMU_VERSION
    if (verdict.missing_model or verdict.missing_machine) and known and pinned and caps.qemu_version != pinned:
        return f"its QEMU is {caps.qemu_version}; the guest was pinned with QEMU {pinned}"
    return None


def verdict_for(view: FleetView, host: HostView, pin: Pin, purpose: str) -> tuple[Verdict, tuple[str, ...]]:
    accel = pin.abi.accel
    caps = view.caps(host, accel)
    verdict = check_destination(pin, caps, purpose=purpose, destination=host.name,
                                unavailable=host.unavailable.get(accel))
    reasons = list(verdict.reasons)
    if caps is not None and not verdict.ok:
        extra = _qemu_reason(pin, caps, verdict)
        if extra:
            reasons.append(extra)
    if not host.operational:
        reasons.append(f"the host is non-operational: {host.status_note}")
    return verdict, tuple(reasons)


def pin_key(pin: Pin, fingerprints: dict[int, str] | None = None) -> tuple[object, ...]:
    """What a verdict depends on: the ABI (its fingerprint) and the policy bits the rules read.

    ``fingerprints`` remembers the hash per ABI object: guests sharing one pin hash it once.
    """
    if fingerprints is None:
        fingerprint = pin.fingerprint
    else:
        fingerprint = fingerprints.get(id(pin.abi)) or fingerprints.setdefault(id(pin.abi), pin.fingerprint)
    host = tuple(sorted((pin.host or {}).get("props", {}).items())) if pin.passthrough else ()
    return (fingerprint, pin.policy.match, pin.policy.recompute, pin.policy.mode, host)


@dataclass
class PlacementTable:
    """Every pin against every profile, computed once per distinct pin (guests share a few CPU definitions)."""

    digests: list[str]
    #: ``ok[u, j]``: distinct pin ``u`` fits profile ``j`` (profiles of other accelerators: False)
    ok: npt.NDArray[np.bool_]
    #: pin i -> its row in ``ok``
    row: npt.NDArray[np.intp]

    def fits(self, i: int) -> dict[str, bool]:
        line = self.ok[self.row[i]]
        return {d: bool(line[j]) for j, d in enumerate(self.digests)}

    def counts(self, hosts_per_profile: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """How many hosts can take each pin, given how many (operational) hosts have each profile."""
        per_row: npt.NDArray[np.int64] = self.ok.astype(np.int64) @ hosts_per_profile
        return per_row[self.row]


def placement_table(view: FleetView, pins: Sequence[PinView], purpose: str) -> PlacementTable:
    digests = sorted({d for h in view.hosts for d in h.profiles.values()})
    column = {d: j for j, d in enumerate(digests)}
    keys: dict[tuple[object, ...], int] = {}
    unique: list[Pin] = []
    rows = np.empty(len(pins), dtype=np.intp)
    fingerprints: dict[int, str] = {}
    for i, item in enumerate(pins):
        key = pin_key(item.pin, fingerprints)
        found = keys.get(key)
        if found is None:
            found = keys[key] = len(unique)
            unique.append(item.pin)
        rows[i] = found
    ok = np.zeros((len(unique), len(digests)), dtype=np.bool_)
    by_accel: dict[str, list[int]] = {}
    for u, pin in enumerate(unique):
        by_accel.setdefault(pin.abi.accel, []).append(u)
    for accel, members in by_accel.items():
        accel_digests = list(view.groups(accel))
        cols = np.array([column[d] for d in accel_digests], dtype=np.intp)
        caps_list = [view.profiles[d].caps for d in accel_digests]
        fast = [u for u in members if matrix_can_judge(unique[u], purpose)]
        fast_set = set(fast)
        if fast and accel_digests:
            matrix = placement_matrix([unique[u] for u in fast], accel_digests, caps_list, accel, purpose)
            ok[np.ix_(np.array(fast, dtype=np.intp), cols)] = matrix.ok
        for u in members:
            if u in fast_set:
                continue
            for j, caps in zip(cols, caps_list, strict=True):
                ok[u, j] = check_destination(unique[u], caps, purpose=purpose, destination="").ok
    return PlacementTable(digests, ok, rows)


def fits(view: FleetView, pins: Sequence[PinView], purpose: str) -> list[dict[str, bool]]:
    """For each pin, digest -> fits; by the matrix where it can judge, else by ``check_destination``."""
    table = placement_table(view, pins, purpose)
    return [table.fits(i) for i in range(len(pins))]


def where(view: FleetView, pins: Sequence[PinView], *, purpose: str = "migrate") -> Placement:
    """Every host that can take each pin exactly, and for every other host why not."""
    fit = fits(view, pins, purpose)
    placements = []
    for item, fit_by_digest in zip(pins, fit, strict=True):
        accel = item.pin.abi.accel
        ok_hosts: list[str] = []
        refused: list[Refusal] = []
        for host in view.hosts:
            digest = host.profiles.get(accel)
            if digest is not None and fit_by_digest.get(digest) and host.operational:
                ok_hosts.append(host.name)
                continue
            verdict, reasons = verdict_for(view, host, item.pin, purpose)
            refused.append(Refusal(host.name, reasons, verdict))
        placements.append(PinPlacement(item.name, item.pin.fingerprint, accel, item.host, tuple(ok_hosts),
                                       tuple(refused)))
    return Placement(purpose, tuple(placements))


@dataclass(frozen=True)
class PlacementCounts:
    """How many hosts can take each pin: the fleet-scale form of ``where`` (no per-host reasons)."""

    purpose: str
    names: tuple[str, ...]
    counts: tuple[int, ...]
    hosts: int

    def to_json(self) -> PlacementCountsJson:
        return {"purpose": self.purpose, "hosts": self.hosts,
                "pins": [{"pin": n, "hosts_ok": c} for n, c in zip(self.names, self.counts, strict=True)]}


def where_counts(view: FleetView, pins: Sequence[PinView], *, purpose: str = "migrate") -> PlacementCounts:
    table = placement_table(view, pins, purpose)
    column = {d: j for j, d in enumerate(table.digests)}
    per_row: list[int] = [0] * len(pins)
    if table.digests:
        by_accel: dict[str, np.ndarray] = {}  # type: ignore[type-arg]
        for accel in sorted({p.pin.abi.accel for p in pins}):
            hosts_per_profile = np.zeros(len(table.digests), dtype=np.int64)
            for host in view.hosts:
                digest = host.profiles.get(accel)
                if host.operational and digest is not None:
                    hosts_per_profile[column[digest]] += 1
            by_accel[accel] = table.counts(hosts_per_profile)
        per_row = [int(by_accel[p.pin.abi.accel][i]) for i, p in enumerate(pins)]
    return PlacementCounts(purpose, tuple(p.name for p in pins), tuple(per_row), len(view.hosts))
