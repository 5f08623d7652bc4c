"""The fleet report: one self-contained HTML page of a cluster (hosts x models, its CPU, stranded guests).

``report_data`` turns the fleet API's results (the view, the baseline, the placement
of every stored guest) into ``ReportData`` (pure); ``render_report`` turns that into
the page (pure: data in, a string out); ``fleet_report`` fetches the results from a
store, for ``guestcpu fleet report`` and the service's ``/v1/report`` alike.

The page has no external resource at all (inline CSS, no script, no font or image
fetched), so it can be mailed, archived or opened offline. Every text that comes
from the fleet (host, cluster, guest, model and feature names) is escaped: host
names are chosen by whoever fills the inventory, and the page must not run them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from guestcpu.errors import GuestCpuError

if TYPE_CHECKING:
    from guestcpu.catalog.catalog import Catalog
    from guestcpu.fleet.baseline import FleetBaseline
    from guestcpu.fleet.placement import PinPlacement, Placement
    from guestcpu.fleet.store import Store
    from guestcpu.fleet.view import FleetView, HostView

#: a heatmap cell: the model is usable, blocked by some features, or not offered by that host's QEMU
USABLE, BLOCKED, ABSENT = "usable", "blocked", "absent"
VERIFIED = "verified startable"


@dataclass(frozen=True)
class ReportHost:
    name: str
    cluster: str
    #: the accelerator of the report, or "" when the host has no capabilities under it
    accel: str
    qemu_version: str = ""
    #: "" when operational, else why not (e.g. it cannot give the frozen cluster CPU)
    non_operational: str = ""
    #: other hosts with exactly this host's offer, shown in its column (large fleets)
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeftOut:
    """A feature the cluster CPU leaves out, and the hosts that lack it."""

    feature: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class ReportBaseline:
    model: str
    features: tuple[str, ...] = ()
    left_out: tuple[LeftOut, ...] = ()
    #: the hosts that keep some feature out of the cluster CPU
    limiting_hosts: tuple[str, ...] = ()
    unused_shared: tuple[str, ...] = ()
    #: host -> "verified startable" or why not
    startable: Mapping[str, str] = field(default_factory=dict)
    frozen: str = ""


@dataclass(frozen=True)
class StrandedGuest:
    guest: str
    host: str
    reason: str


@dataclass(frozen=True)
class ReportData:
    title: str
    generated_at: str
    accel: str
    hosts: tuple[ReportHost, ...]
    models: tuple[str, ...]
    #: (host, model) -> the features that block it; a missing key means the host's QEMU lacks the model
    blockers: Mapping[tuple[str, str], tuple[str, ...]]
    baseline: ReportBaseline | None
    baseline_error: str = ""
    stranded: tuple[StrandedGuest, ...] = ()
    guests: int = 0

    @property
    def host_count(self) -> int:
        return sum(1 + len(h.also) for h in self.hosts)

    def pairs(self) -> tuple[int, int]:
        """(usable, blocked) host/model pairs, every host of a shared column counted."""
        weight = {h.name: 1 + len(h.also) for h in self.hosts}
        usable = sum(weight[host] for (host, _model), found in self.blockers.items() if not found)
        blocked = sum(weight[host] for (host, _model), found in self.blockers.items() if found)
        return usable, blocked

    def summary(self) -> dict[str, Any]:
        """The page in numbers (what ``fleet report --json`` prints beside the file's name)."""
        usable, blocked = self.pairs()
        return {
            "hosts": self.host_count, "columns": len(self.hosts), "models": len(self.models),
            "cells": len(self.hosts) * len(self.models), "usable": usable, "blocked": blocked,
            "baseline": self.baseline.model if self.baseline else None, "baseline_error": self.baseline_error,
            "guests": self.guests, "stranded": len(self.stranded),
        }

    def cell(self, host: str, model: str) -> tuple[str, tuple[str, ...]]:
        if (host, model) not in self.blockers:
            return ABSENT, ()
        found = self.blockers[host, model]
        return (BLOCKED, found) if found else (USABLE, ())


CSS = """
:root { --ok: #2e7d32; --b1: #f9a825; --b2: #ef6c00; --b3: #c62828; --absent: #e0e0e0; --ink: #212121; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0; padding: 16px 24px; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 24px 0 8px; }
.meta { color: #616161; margin: 0 0 8px; }
.summary { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; }
.card b { display: block; font-size: 20px; }
.cpu { font: 600 20px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.error { color: var(--b3); font-weight: 600; }
.ok { color: var(--ok); }
#heatmap .more { font-weight: 400; color: #616161; }
#stranded td:nth-child(-n+2) { white-space: nowrap; }
.heat-wrap { overflow: auto; max-height: 80vh; border: 1px solid #ddd; }
#heatmap th, #heatmap td { padding: 0; text-align: center; }
#heatmap thead th { position: sticky; top: 0; z-index: 2; padding: 4px 6px; max-width: 12em;
                    overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#heatmap tbody th { position: sticky; left: 0; z-index: 1; padding: 1px 8px; text-align: left;
                    font-weight: 500; white-space: nowrap; }
#heatmap td { min-width: 3.2em; height: 1.6em; font-size: 12px; color: #fff; vertical-align: middle; }
#heatmap td.usable { background: var(--ok); }
#heatmap td.blocked.few { background: var(--b1); color: var(--ink); }
#heatmap td.blocked.some { background: var(--b2); }
#heatmap td.blocked.many { background: var(--b3); }
#heatmap td.absent { background: var(--absent); color: #616161; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 3px; color: #fff; }
.legend .usable { background: var(--ok); } .legend .few { background: var(--b1); color: var(--ink); }
.legend .some { background: var(--b2); } .legend .many { background: var(--b3); }
.legend .absent { background: var(--absent); color: #424242; }
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _severity(count: int) -> str:
    return "few" if count == 1 else "some" if count <= 3 else "many"


#: names shown in one list before "and N more" (the page stays readable for 10,000 hosts)
LIST_LIMIT = 25
#: table rows shown at most (the JSON answers have them all)
MAX_ROWS = 500
#: beyond this many hosts, hosts with the same offer share one heatmap column
MAX_HOST_COLUMNS = 60


def _list(items: Sequence[str], empty: str = "none", limit: int | None = None) -> str:
    if not items:
        return f"<i>{_e(empty)}</i>"
    shown = items if limit is None else items[:limit]
    more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return ", ".join(f"<code>{_e(i)}</code>" for i in shown) + _e(more)


def _summary(data: ReportData) -> str:
    usable, blocked = data.pairs()
    cards = [("hosts", data.host_count), ("models", len(data.models)), ("usable host/model pairs", usable),
             ("blocked pairs", blocked), ("guests", data.guests), ("stranded guests", len(data.stranded))]
    return '<div class="summary">' + "".join(
        f'<div class="card" data-count="{_e(key)}"><b>{value}</b>{_e(key)}</div>' for key, value in cards
    ) + "</div>"


def _baseline(data: ReportData) -> str:
    out = ['<section id="baseline"><h2>Cluster CPU</h2>']
    base = data.baseline
    if base is None:
        out.append(f'<p class="error">No CPU every host can give: {_e(data.baseline_error or "no hosts")}</p>')
        return "".join(out) + "</section>"
    out.append(f'<p>The best CPU every host can give under {_e(data.accel)}: <span class="cpu" id="baseline-model">'
               f"{_e(base.model)}</span></p>")
    if base.frozen:
        out.append(f'<p id="frozen">The cluster CPU is frozen as pin <code>{_e(base.frozen)}</code>.</p>')
    out.append(f'<p>Its features (all explicit): <span id="baseline-features">{_list(base.features)}</span></p>')
    limiting = base.limiting_hosts
    out.append(f'<p>Limiting hosts: <span id="limiting-hosts" data-hosts="{len(limiting)}">'
               f'{_list(limiting, "none: nothing is left out", LIST_LIMIT)}</span></p>')
    if base.left_out:
        # One row per set of lacking hosts: "these hosts keep these features out".
        groups: dict[tuple[str, ...], list[str]] = {}
        for item in base.left_out:
            groups.setdefault(item.hosts, []).append(item.feature)
        out.append('<table id="left-out"><thead><tr><th>hosts that lack them</th><th>features left out</th></tr>'
                   "</thead><tbody>")
        out.extend(f'<tr><td data-hosts="{len(hosts)}">{_list(hosts, limit=LIST_LIMIT)}</td>'
                   f'<td data-features="{len(features)}">{_list(features)}</td></tr>'
                   for hosts, features in sorted(groups.items(), key=lambda g: (len(g[0]), g[0])))
        out.append("</tbody></table>")
    out.append(f"<p>Shared by every host but left unused: {_list(base.unused_shared)}</p>")
    verified = sum(1 for verdict in base.startable.values() if verdict == VERIFIED)
    out.append(f'<p id="verified">Verified startable on {verified} of {len(base.startable)} hosts.</p>')
    # Every host when few; else only those where it is not verified (they are the news).
    rows = sorted(base.startable.items()) if len(base.startable) <= LIST_LIMIT else \
        sorted((h, v) for h, v in base.startable.items() if v != VERIFIED)
    if rows:
        out.append('<table id="startable"><thead><tr><th>host</th><th>startable</th></tr></thead><tbody>')
        out.extend(f"<tr><td>{_e(host)}</td><td>{_e(verdict)}</td></tr>" for host, verdict in rows[:MAX_ROWS])
        out.append("</tbody></table>")
    return "".join(out) + "</section>"


def _stranded(data: ReportData) -> str:
    out = ['<section id="stranded"><h2>Stranded guests</h2>']
    if not data.stranded:
        out.append(f'<p class="ok">None: each of the {data.guests} stored guests can run and move.</p>')
        return "".join(out) + "</section>"
    out.append('<table><thead><tr><th>guest</th><th>runs on</th><th>why</th></tr></thead><tbody>')
    out.extend(f'<tr class="stranded-guest"><td>{_e(g.guest)}</td><td>{_e(g.host)}</td><td>{_e(g.reason)}</td></tr>'
               for g in data.stranded[:MAX_ROWS])
    out.append("</tbody></table>")
    if len(data.stranded) > MAX_ROWS:
        out.append(f"<p>&hellip; and {len(data.stranded) - MAX_ROWS} more stranded guests "
                   "('guestcpu fleet where --json' lists them all).</p>")
    return "".join(out) + "</section>"


def _heatmap(data: ReportData) -> str:
    out = ['<section id="models"><h2>Models &times; hosts</h2>',
           '<p class="legend"><span class="usable">&#10003; usable</span><span class="few">1 blocker</span>'
           '<span class="some">2&ndash;3</span><span class="many">4 or more</span>'
           '<span class="absent">not in this QEMU</span> (hover a cell for its blockers)</p>',
           '<div class="heat-wrap"><table id="heatmap"><thead><tr><th>model</th>']
    for host in data.hosts:
        note = f" — non-operational: {host.non_operational}" if host.non_operational else ""
        accel = host.accel or f"no {data.accel} capabilities"
        tip = f"{host.name} (cluster {host.cluster}, {accel}, QEMU {host.qemu_version or '?'}){note}"
        if host.also:
            names = ", ".join(host.also[:30]) + (f" and {len(host.also) - 30} more" if len(host.also) > 30 else "")
            tip += f"; the same offer: {names}"
            out.append(f'<th class="host" data-hosts="{1 + len(host.also)}" title="{_e(tip)}">{_e(host.name)}'
                       f'<span class="more"> +{len(host.also)}</span></th>')
        else:
            out.append(f'<th class="host" title="{_e(tip)}">{_e(host.name)}</th>')
    out.append("</tr></thead><tbody>")
    for model in data.models:
        out.append(f'<tr><th class="model">{_e(model)}</th>')
        for host in data.hosts:
            state, found = data.cell(host.name, model)
            if state == USABLE:
                out.append(f'<td class="cell usable" title="{_e(f"{model} on {host.name}: usable")}">&#10003;</td>')
            elif state == BLOCKED:
                tip = f"{model} on {host.name}: blocked by {len(found)}: {', '.join(found)}"
                out.append(f'<td class="cell blocked {_severity(len(found))}" data-blockers="{len(found)}" '
                           f'title="{_e(tip)}">{len(found)}</td>')
            else:
                why = f"not offered by the QEMU of {host.name}" if host.accel else f"{host.name} has no {data.accel}"
                out.append(f'<td class="cell absent" title="{_e(f"{model}: {why}")}">&ndash;</td>')
        out.append("</tr>")
    return "".join(out) + "</tbody></table></div></section>"


def render_report(data: ReportData) -> str:
    """The whole page as one string."""
    clusters = sorted({h.cluster for h in data.hosts})
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may be fetched: no scripts, styles, images or fonts from anywhere.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(data.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="meta">Generated by guestcpu at {_e(data.generated_at)} &middot; clusters: '
        f"{_list(clusters)}</p>",
        _summary(data), _baseline(data), _stranded(data), _heatmap(data),
        "</body></html>\n",
    ])


# -- from the fleet API's results ---------------------------------------------------------------
def _version_key(name: str) -> tuple[str, int]:
    """Skylake-Client-v10 after -v9: the version compared as a number (the catalog's own grammar)."""
    from guestcpu.model.names import split_version

    base, version = split_version(name)
    return base, version or 0


def _columns(view: FleetView, accel: str, max_columns: int) -> list[tuple[HostView, tuple[str, ...]]]:
    """One column per host; beyond ``max_columns`` hosts, one per distinct offer (and state)."""
    if len(view.hosts) <= max_columns:
        return [(host, ()) for host in view.hosts]
    groups: dict[tuple[str, bool, str, str], list[HostView]] = {}
    for host in view.hosts:
        groups.setdefault((host.profiles.get(accel, ""), host.operational, host.status_note, host.cluster),
                          []).append(host)
    return [(members[0], tuple(h.name for h in members[1:])) for members in groups.values()]


def _heatmap_cells(
    view: FleetView, hosts: Sequence[HostView], accel: str,
) -> tuple[tuple[str, ...], dict[tuple[str, str], tuple[str, ...]]]:
    models: set[str] = set()
    blockers: dict[tuple[str, str], tuple[str, ...]] = {}
    for host in hosts:
        caps = view.caps(host, accel)
        if caps is None:
            continue
        for model in caps.models:
            if model.alias_of is not None:
                continue  # the versioned name it stands for has the row
            models.add(model.name)
            found = model.blockers if not model.usable else ()
            blockers[host.name, model.name] = found or (("(QEMU names no feature)",) if not model.usable else ())
    return tuple(sorted(models, key=_version_key)), blockers


def _report_baseline(result: FleetBaseline, frozen: str) -> ReportBaseline:
    startable = {
        verdict.host: VERIFIED if verdict.verified
        else f"{verdict.result}, not verified" + (f" ({verdict.note})" if verdict.note else "")
        for verdict in result.hosts
    }
    startable.update({host: f"left out: {reason}" for host, reason in result.skipped})
    return ReportBaseline(
        model=result.model, features=result.features,
        left_out=tuple(LeftOut(item.feature, item.lacking) for item in result.left_out),
        limiting_hosts=tuple(result.limiting_hosts), unused_shared=result.not_enabled_common,
        startable=startable, frozen=frozen,
    )


def _short(reasons: Sequence[str], limit: int = 3) -> str:
    shown = "; ".join(reasons[:limit])
    return shown + (f"; and {len(reasons) - limit} more" if len(reasons) > limit else "")


def stranded_guests(pins: Sequence[PinPlacement]) -> tuple[StrandedGuest, ...]:
    """Guests that cannot run where they run, or that no other host can take."""
    found = []
    for pin in pins:
        refused = {r.host: r.reasons for r in pin.refused}
        if pin.runs_on is not None and pin.runs_on in refused:
            found.append(StrandedGuest(pin.name, pin.runs_on,
                                       f"cannot run where it runs: {_short(refused[pin.runs_on])}"))
        elif not [h for h in pin.hosts if h != pin.runs_on]:
            why = "; ".join(f"{host}: {_short(reasons, 2)}" for host, reasons in list(refused.items())[:3])
            more = f" (and {len(refused) - 3} more hosts)" if len(refused) > 3 else ""
            where = "no other host can take it" if pin.runs_on else "no host can take it"
            found.append(StrandedGuest(pin.name, pin.runs_on or "", f"{where}: {why}{more}" if why else where))
    return tuple(found)


def report_data(
    view: FleetView, baseline: FleetBaseline | None, placement: Placement | None, *, accel: str,
    cluster: str | None = None, baseline_error: str = "", generated_at: str = "",
    max_columns: int = MAX_HOST_COLUMNS,
) -> ReportData:
    """The page's content from the fleet API's results (pure)."""
    view = view.in_cluster(cluster)
    columns = _columns(view, accel, max_columns)
    models, blockers = _heatmap_cells(view, [host for host, _also in columns], accel)
    hosts = tuple(
        ReportHost(h.name, h.cluster, accel if accel in h.profiles else "", h.qemu_version,
                   "" if h.operational else (h.status_note or "non-operational"), also)
        for h, also in columns
    )
    frozen = view.frozen.get(cluster, "") if cluster else ""
    names = {h.name for h in view.hosts}
    pins = [p for p in placement.pins if p.runs_on is None or p.runs_on in names] if placement else []
    title = f"guestcpu fleet report: {f'cluster {cluster}' if cluster else 'all hosts'}"
    return ReportData(
        title=title, generated_at=generated_at, accel=accel, hosts=hosts, models=models, blockers=blockers,
        baseline=_report_baseline(baseline, frozen) if baseline is not None else None,
        baseline_error=baseline_error,
        stranded=stranded_guests(pins),
        guests=len(pins),
    )


def fleet_report(store: Store, catalog: Catalog, *, cluster: str | None = None, accel: str = "kvm") -> ReportData:
    """Everything the page shows, from the store (one read of the inventory)."""
    from guestcpu.fleet.api import load_view
    from guestcpu.fleet.baseline import fleet_baseline
    from guestcpu.fleet.placement import where

    view = load_view(store)
    hosts = view.in_cluster(cluster)  # an unknown cluster is refused here
    baseline, error = None, ""
    try:
        baseline = fleet_baseline(view, catalog, accel=accel, cluster=cluster)
    except GuestCpuError as exc:
        error = str(exc)  # the page still shows the hosts, and why there is no cluster CPU
    placement = where(hosts, list(view.pins), purpose="migrate")
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return report_data(view, baseline, placement, accel=accel, cluster=cluster, baseline_error=error,
                       generated_at=now)

