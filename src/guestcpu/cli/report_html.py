"""The fleet report: one self-contained HTML page (pure: report data in, a string out).

The page has no external resource at all (inline CSS, no script, no font or image
fetched), so it can be mailed, archived or opened offline. Every text that comes
from the fleet (host, cluster, guest, model and feature names) is escaped: host
names are chosen by whoever fills the inventory, and the page must not run them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

#: a heatmap cell: the model is usable, blocked by some features, or not offered by that host's QEMU
USABLE, BLOCKED, ABSENT = "usable", "blocked", "absent"


@dataclass(frozen=True)
class ReportHost:
    name: str
    cluster: str
    accel: str
    qemu_version: str = ""
    #: "" when operational, else why not (e.g. it cannot give the frozen cluster CPU)
    non_operational: str = ""


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
    unused_shared: tuple[str, ...] = ()
    #: host -> "verified" / "not verified (...)" / the reason it cannot start
    startable: Mapping[str, str] = field(default_factory=dict)
    frozen: bool = False

    @property
    def limiting_hosts(self) -> tuple[str, ...]:
        """The hosts that keep a feature out of the cluster CPU, most limiting first."""
        counts: dict[str, int] = {}
        for item in self.left_out:
            for host in item.hosts:
                counts[host] = counts.get(host, 0) + 1
        return tuple(sorted(counts, key=lambda h: (-counts[h], h)))


@dataclass(frozen=True)
class StrandedGuest:
    guest: str
    host: str
    reason: str


@dataclass(frozen=True)
class ReportData:
    title: str
    generated_at: str
    hosts: tuple[ReportHost, ...]
    models: tuple[str, ...]
    #: (host, model) -> the features that block it; a missing key means the host's QEMU lacks the model
    blockers: Mapping[tuple[str, str], tuple[str, ...]]
    baseline: ReportBaseline | None
    baseline_error: str = ""
    stranded: tuple[StrandedGuest, ...] = ()
    guests: int = 0

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


def _list(items: Sequence[str], empty: str = "none") -> str:
    return ", ".join(f"<code>{_e(i)}</code>" for i in items) if items else f"<i>{_e(empty)}</i>"


def _summary(data: ReportData) -> str:
    blocked = sum(1 for found in data.blockers.values() if found)
    usable = sum(1 for found in data.blockers.values() if not found)
    cards = [("hosts", len(data.hosts)), ("models", len(data.models)), ("usable host/model pairs", usable),
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
    frozen = " (frozen)" if base.frozen else ""
    out.append(f'<p>The best CPU every host can give{_e(frozen)}: <span class="cpu" id="baseline-model">'
               f"{_e(base.model)}</span></p>")
    out.append(f'<p>Explicit features: <span id="baseline-features">{_list(base.features)}</span></p>')
    limiting = base.limiting_hosts
    out.append(f'<p>Limiting hosts: <span id="limiting-hosts">{_list(limiting, "none: nothing is left out")}'
               "</span></p>")
    if base.left_out:
        out.append('<table id="left-out"><thead><tr><th>feature left out</th><th>hosts that lack it</th></tr>'
                   "</thead><tbody>")
        out.extend(f"<tr><td><code>{_e(item.feature)}</code></td><td>{_list(item.hosts)}</td></tr>"
                   for item in base.left_out)
        out.append("</tbody></table>")
    out.append(f"<p>Shared by every host but left unused: {_list(base.unused_shared)}</p>")
    if base.startable:
        out.append('<table id="startable"><thead><tr><th>host</th><th>startable</th></tr></thead><tbody>')
        out.extend(f"<tr><td>{_e(host)}</td><td>{_e(verdict)}</td></tr>"
                   for host, verdict in sorted(base.startable.items()))
        out.append("</tbody></table>")
    return "".join(out) + "</section>"


def _stranded(data: ReportData) -> str:
    out = ['<section id="stranded"><h2>Stranded guests</h2>']
    if not data.stranded:
        out.append(f'<p class="ok">None: each of the {data.guests} stored guests can run and move.</p>')
        return "".join(out) + "</section>"
    out.append('<table><thead><tr><th>guest</th><th>runs on</th><th>why</th></tr></thead><tbody>')
    out.extend(f'<tr class="stranded-guest"><td>{_e(g.guest)}</td><td>{_e(g.host)}</td><td>{_e(g.reason)}</td></tr>'
               for g in data.stranded)
    return "".join(out) + "</tbody></table></section>"


def _heatmap(data: ReportData) -> str:
    out = ['<section id="models"><h2>Models &times; hosts</h2>',
           '<p class="legend"><span class="usable">&#10003; usable</span><span class="few">1 blocker</span>'
           '<span class="some">2&ndash;3</span><span class="many">4 or more</span>'
           '<span class="absent">not in this QEMU</span> (hover a cell for its blockers)</p>',
           '<div class="heat-wrap"><table id="heatmap"><thead><tr><th>model</th>']
    for host in data.hosts:
        note = f" — non-operational: {host.non_operational}" if host.non_operational else ""
        tip = f"{host.name} (cluster {host.cluster}, {host.accel}, QEMU {host.qemu_version or '?'}){note}"
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
                out.append(f'<td class="cell absent" title="{_e(f"{model}: not offered by the QEMU of {host.name}")}">'
                           "&ndash;</td>")
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
