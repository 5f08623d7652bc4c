"""``fleet what-if``: add, retire or upgrade hosts on paper and see what it does (pure).

The changed fleet is a copy of the view; the stored inventory is not touched.  The
answer has the cluster baseline before and after (model, features gained and lost)
and, for every stored guest, whether it loses its last destination (no other host
can take it any more) or can no longer start on the host it runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from typing_extensions import TypedDict

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.fleet.baseline import BaselineChangeJson, BaselineJson, FleetBaseline, compare_baselines, fleet_baseline
from guestcpu.fleet.inputs import HostRecord
from guestcpu.fleet.inventory import DEFAULT_CLUSTER
from guestcpu.fleet.placement import fits, verdict_for
from guestcpu.fleet.view import FleetView, HostView, ProfileView


def _with_record(view: FleetView, record: HostRecord, cluster: str) -> tuple[HostView, dict[str, ProfileView]]:
    profiles = {}
    for accel, profile in record.profiles.items():
        if profile.digest not in view.profiles:
            profiles[profile.digest] = ProfileView(profile.digest, profile.caps(f"{record.name} ({accel})"),
                                                   profile.verified)
    host = HostView(record.name, cluster, profiles={a: p.digest for a, p in record.profiles.items()},
                    unavailable=dict(record.unavailable), qemu_version=record.qemu_version, source=record.source)
    return host, profiles


def changed_view(
    view: FleetView, *, add: Sequence[HostRecord] = (), remove: Sequence[str] = (),
    upgrade: Sequence[HostRecord] = (), cluster: str | None = None,
) -> FleetView:
    hosts = {h.name: h for h in view.hosts}
    profiles = dict(view.profiles)
    for name in dict.fromkeys(remove):  # a host named twice is retired once, as by 'fleet remove'
        view.host(name)  # an unknown host is an error, with suggestions
        del hosts[name]
    for record in upgrade:
        old = view.host(record.name)
        host, new_profiles = _with_record(view, record, old.cluster)
        hosts[record.name] = replace(host, tags=old.tags, operational=old.operational, status_note=old.status_note)
        profiles.update(new_profiles)
    for record in add:
        if record.name in hosts:
            raise InputError(f"host {record.name} is already in the inventory; use --upgrade {record.name}=FILE")
        host, new_profiles = _with_record(view, record, cluster or DEFAULT_CLUSTER)
        hosts[record.name] = host
        profiles.update(new_profiles)
    return replace(view, hosts=tuple(hosts[n] for n in sorted(hosts)), profiles=profiles)


class GuestImpactJson(TypedDict):
    pin: str
    runs_on: str | None
    destinations_before: int
    destinations_after: int
    lost_last_destination: bool
    cannot_start_where_it_runs: bool
    reasons: list[str]


class NoBaselineChange(TypedDict):
    """No baseline before or after to compare: ``{}``."""


class WhatIfJson(TypedDict):
    """``WhatIf.to_json()``: the body of ``fleet what-if --json``."""

    cluster: str | None
    added: list[str]
    removed: list[str]
    upgraded: list[str]
    baseline: BaselineChangeJson | NoBaselineChange
    baseline_before: BaselineJson | None
    baseline_after: BaselineJson | None
    baseline_after_error: str | None
    guests: list[GuestImpactJson]
    stranded: list[str]


@dataclass(frozen=True)
class GuestImpact:
    pin: str
    runs_on: str | None
    destinations_before: int
    destinations_after: int
    lost_last_destination: bool
    cannot_start_where_it_runs: bool
    reasons: tuple[str, ...]

    def to_json(self) -> GuestImpactJson:
        return {"pin": self.pin, "runs_on": self.runs_on, "destinations_before": self.destinations_before,
                "destinations_after": self.destinations_after, "lost_last_destination": self.lost_last_destination,
                "cannot_start_where_it_runs": self.cannot_start_where_it_runs, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class WhatIf:
    cluster: str | None
    added: tuple[str, ...]
    removed: tuple[str, ...]
    upgraded: tuple[str, ...]
    before: FleetBaseline | None
    after: FleetBaseline | None
    after_error: str | None
    guests: tuple[GuestImpact, ...]

    @property
    def stranded(self) -> list[str]:
        return [g.pin for g in self.guests if g.lost_last_destination or g.cannot_start_where_it_runs]

    def to_json(self) -> WhatIfJson:
        baseline: BaselineChangeJson | NoBaselineChange = NoBaselineChange()
        if self.before is not None and self.after is not None:
            baseline = compare_baselines(self.before, self.after)
        return {
            "cluster": self.cluster, "added": list(self.added), "removed": list(self.removed),
            "upgraded": list(self.upgraded),
            "baseline": baseline,
            "baseline_before": self.before.to_json() if self.before else None,
            "baseline_after": self.after.to_json() if self.after else None,
            "baseline_after_error": self.after_error,
            "guests": [g.to_json() for g in self.guests],
            "stranded": self.stranded,
        }


def _destinations(view: FleetView, fit: dict[str, bool], accel: str, exclude: str | None) -> list[str]:
    return [h.name for h in view.hosts if h.name != exclude and h.operational
            and fit.get(h.profiles.get(accel, ""), False)]


def what_if(
    view: FleetView, catalog: Catalog, *, add: Sequence[HostRecord] = (), remove: Sequence[str] = (),
    upgrade: Sequence[HostRecord] = (), cluster: str | None = None, accel: str = "kvm",
) -> WhatIf:
    before_view = view.in_cluster(cluster)
    after_all = changed_view(view, add=add, remove=remove, upgrade=upgrade, cluster=cluster)
    # every host of the cluster retired: no baseline after, and no error (as 'fleet remove' would leave it)
    after_view = replace(after_all, hosts=tuple(h for h in after_all.hosts if h.cluster == cluster)) \
        if cluster else after_all
    # the baselines 'fleet baseline [--cluster]' gives before and after the change
    before = fleet_baseline(before_view, catalog, accel=accel, cluster=cluster) if before_view.hosts else None
    after: FleetBaseline | None = None
    error = None
    try:
        if not after_view.hosts:
            raise InputError(f"cluster '{cluster}' has no host left" if cluster else "the inventory has no host left")
        after = fleet_baseline(after_view, catalog, accel=accel, cluster=cluster)
    except GuestCpuError as exc:
        error = str(exc)
    pins = list(view.pins)
    fit_before = fits(before_view, pins, "migrate")
    fit_after = fits(after_view, pins, "migrate")
    start_before = fits(view, pins, "start")
    start_after = fits(after_all, pins, "start")
    impacts = []
    for item, fb, fa, sb, sa in zip(pins, fit_before, fit_after, start_before, start_after, strict=True):
        pin_accel = item.pin.abi.accel
        dest_before = _destinations(before_view, fb, pin_accel, item.host)
        dest_after = _destinations(after_view, fa, pin_accel, item.host)
        reasons: list[str] = []
        cannot_start = False
        if item.host is not None:
            names = {h.name for h in after_all.hosts}
            if item.host not in names:
                cannot_start, reasons = True, [f"its host {item.host} is retired"]
            else:
                host, old = after_all.host(item.host), view.host(item.host)
                could = sb.get(old.profiles.get(pin_accel, ""), False)
                if could and not sa.get(host.profiles.get(pin_accel, ""), False):
                    cannot_start = True
                    reasons = list(verdict_for(after_all, host, item.pin, "start")[1])
        lost = bool(dest_before) and not dest_after
        if lost:
            reasons.append(f"no host but the one it runs on can take it any more (before: {', '.join(dest_before)})")
        impacts.append(GuestImpact(item.name, item.host, len(dest_before), len(dest_after), lost, cannot_start,
                                   tuple(reasons)))
    return WhatIf(cluster, tuple(r.name for r in add), tuple(dict.fromkeys(remove)), tuple(r.name for r in upgrade),
                  before, after, error, tuple(impacts))
