"""``guestcpu fleet …``: the inventory and its answers (every command one transaction, all with --json)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from guestcpu.cli.common import emit_json, json_option, load_catalog_for
from guestcpu.errors import InputError

db_option = click.option(
    "--db", "db_url", metavar="URL", envvar="GUESTCPU_DB",
    help="Inventory database: sqlite:///PATH or postgresql://USER@HOST/DB "
    "(default: $GUESTCPU_DB, else $XDG_DATA_HOME/guestcpu/fleet.db).",
)
cluster_option = click.option("--cluster", metavar="NAME", help="Only the hosts of this cluster.")
accel_choice = click.option("--accel", type=click.Choice(["kvm", "tcg"]), default="kvm", show_default=True,
                            help="The accelerator guests run under.")


def _store(db_url: str | None) -> Any:
    from guestcpu.fleet.store import open_store

    return open_store(db_url)


def _read(path: str, what: str) -> bytes:
    from guestcpu.formats.files import read_bytes

    return read_bytes(path, what)


def _read_json(path: str, what: str) -> Any:
    data = _read(path, what)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InputError(f"{path} is not JSON ({what} expected): {exc}") from None


@click.group("fleet")
def fleet_cmd() -> None:
    """Many hosts: an inventory (SQLite or PostgreSQL) and which CPU is safe where.

    Hosts come from 'guestcpu capture' documents or 'virsh domcapabilities' XML; guests
    from their pins ('guestcpu define').  Every command is one transaction.
    """


@contextlib.contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar (done/total, on a terminal, for 50 files or more); yields its one-step advance."""
    from rich.progress import MofNCompleteColumn, Progress

    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), transient=True,
                  disable=total < 50) as progress:
        task = progress.add_task(what, total=total)
        yield lambda: progress.advance(task)


def _files(items: tuple[str, ...], suffixes: tuple[str, ...], what: str) -> list[str]:
    """Each FILE, and each DIR's files with one of ``suffixes`` (sorted; not its subfolders)."""
    found: list[str] = []
    for item in items:
        path = Path(item)
        if not path.is_dir():
            found.append(item)
            continue
        inside = sorted(str(p) for p in path.iterdir() if p.suffix in suffixes and not p.is_dir())
        if not inside:
            raise InputError(f"{item} is a folder with no {what} in it")
        found += inside
    return found


def _host_files(items: tuple[str, ...]) -> list[str]:
    return _files(items, (".json", ".xml"), "*.json captures or *.xml domain capabilities")


def _pin_name(path: str) -> str:
    return Path(path).name.removesuffix(".json").removesuffix(".pin")


@fleet_cmd.command("add")
@click.argument("files", nargs=-1, required=True, metavar="FILE|DIR...")
@click.option("--cluster", metavar="NAME", help="The cluster of the hosts (default: theirs, else 'default').")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag for the hosts (repeatable).")
@click.option("--name", metavar="HOST", help="The host's name (one FILE; needed for domcapabilities XML).")
@click.option("--force", is_flag=True,
              help="Add hosts that cannot give their frozen cluster's CPU, as non-operational.")
@db_option
@json_option
@click.pass_context
def add_cmd(ctx: click.Context, files: tuple[str, ...], cluster: str | None, tags: tuple[str, ...],
            name: str | None, force: bool, db_url: str | None, as_json: bool) -> None:
    """Add hosts (or replace their state, keeping history) from capture or domcapabilities FILEs.

    A DIR stands for its *.json and *.xml files.  All are added, or none.
    """
    from guestcpu.fleet import api
    from guestcpu.fleet.parsing import worker_count

    paths = _host_files(files)
    if name and len(paths) != 1:
        raise InputError("--name names one host; give exactly one FILE with it")
    catalog = load_catalog_for(ctx)
    store = _store(db_url)

    def inputs() -> Iterator[api.HostInput]:
        for path in paths:
            yield path, _read(path, "a guestcpu capture (JSON) or virsh domcapabilities (XML)"), name

    with _progress("adding hosts", len(paths)) as advance:
        report = api.add_hosts(store, inputs(), catalog, cluster=cluster, tags=tags, force=force,
                               progress=advance, workers=worker_count(len(paths)))
    if as_json:
        emit_json(report.to_json())
        return
    for item in report.added:
        verb = "replaced" if item.replaced else "added"
        line = f"{verb} {item.host} in cluster {item.cluster}"
        if not item.operational:
            line += f" (NON-OPERATIONAL: {item.note})"
        click.echo(line)
        for change in item.changes:
            click.echo(f"  changed: {change}")


@fleet_cmd.command("add-pin")
@click.argument("pin_file", metavar="PIN")
@click.option("--name", metavar="NAME", help="The guest's name (default: the file name without .pin.json).")
@click.option("--host", metavar="HOST", help="The host the guest runs on.")
@db_option
@json_option
def add_pin_cmd(pin_file: str, name: str | None, host: str | None, db_url: str | None, as_json: bool) -> None:
    """Store a guest's pin (from 'guestcpu define'), optionally with the host it runs on."""
    from guestcpu.fleet import api
    from guestcpu.lifecycle.pin import pin_from_document

    pin = pin_from_document(_read_json(pin_file, "a guestcpu pin"), pin_file)
    name = name or _pin_name(pin_file)
    result = api.add_pin(_store(db_url), name, pin, host=host)
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(f"{'replaced' if result.replaced else 'added'} pin {name} ({pin.fingerprint})"
                   + (f" on {host}" if host else ""))


@fleet_cmd.command("add-pins")
@click.argument("items", nargs=-1, required=True, metavar="PIN|DIR...")
@db_option
@json_option
def add_pins_cmd(items: tuple[str, ...], db_url: str | None, as_json: bool) -> None:
    """Store many guests' pins in one transaction, each named after its file (a DIR: its *.json pins)."""
    from guestcpu.fleet import api
    from guestcpu.lifecycle.pin import pin_from_document

    paths = _files(items, (".json",), "*.json pins")
    with _progress("reading pins", len(paths)) as advance:
        pins = []
        for path in paths:
            pins.append((_pin_name(path), pin_from_document(_read_json(path, "a guestcpu pin"), path), None))
            advance()
    report = api.add_pins(_store(db_url), pins)
    if as_json:
        emit_json({"pins": [p.to_json() for p in report], "added": sum(not p.replaced for p in report),
                   "replaced": sum(p.replaced for p in report)})
        return
    replaced = sum(p.replaced for p in report)
    click.echo(f"stored {len(report)} pins ({len(report) - replaced} added, {replaced} replaced)")


@fleet_cmd.command("remove")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@db_option
@json_option
def remove_cmd(hosts: tuple[str, ...], db_url: str | None, as_json: bool) -> None:
    """Retire HOSTs, all or none ('fleet what-if --remove HOST' shows first what it does).

    Each host's history goes with it; its guests' pins stay, with no host; a cluster left
    with no host is removed unless it is frozen.
    """
    from guestcpu.fleet import api

    result = api.remove_hosts(_store(db_url), hosts)
    if as_json:
        emit_json(result.to_json())
        return
    for host in result.hosts:
        click.echo(f"removed {host.host} from cluster {host.cluster} "
                   f"(with its history: {host.states} state{'s' if host.states != 1 else ''})")
        for pin in host.pins_unplaced:
            click.echo(f"  pin {pin} ran on it: kept, with no host")
    for cluster in result.clusters_removed:
        click.echo(f"cluster {cluster} has no host left: removed")
    for cluster in result.clusters_kept_empty:
        click.echo(f"cluster {cluster} has no host left: kept, it is frozen")


@fleet_cmd.command("remove-pin")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@db_option
@json_option
def remove_pin_cmd(names: tuple[str, ...], db_url: str | None, as_json: bool) -> None:
    """Forget guests' stored pins, all or none."""
    from guestcpu.fleet import api

    result = api.remove_pins(_store(db_url), names)
    if as_json:
        emit_json(result.to_json())
        return
    for pin in result.pins:
        click.echo(f"removed pin {pin.pin} ({pin.fingerprint})" + (f", which ran on {pin.host}" if pin.host else ""))


@fleet_cmd.command("hosts")
@cluster_option
@db_option
@json_option
def hosts_cmd(cluster: str | None, db_url: str | None, as_json: bool) -> None:
    """The hosts of the inventory, their clusters and tags."""
    from rich.console import Console
    from rich.table import Table

    from guestcpu.fleet import api

    listing = api.hosts(_store(db_url), cluster=cluster)
    if as_json:
        emit_json(listing.to_json())
        return
    table = Table("host", "cluster", "tags", "accels", "QEMU", "status")
    for host in listing.hosts:
        status = "ok" if host["operational"] else f"non-operational: {host['status_note']}"
        table.add_row(host["name"], host["cluster"], ",".join(host["tags"]), ",".join(host["accels"]),
                      host["qemu_version"], status)
    Console().print(table)


@fleet_cmd.command("history")
@click.argument("host")
@db_option
@json_option
def history_cmd(host: str, db_url: str | None, as_json: bool) -> None:
    """Every state HOST was added with, and what changed each time (microcode, kernel, QEMU)."""
    from guestcpu.fleet import api

    result = api.history(_store(db_url), host)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(f"{result.host} (cluster {result.cluster})")
    for state in result.states:
        click.echo(f"  #{state.seq} {state.recorded_at} from {state.source}: QEMU {state.qemu_version or '?'}, "
                   f"kernel {state.kernel or '?'}, {','.join(state.accels)}")
        for change in state.changes:
            click.echo(f"      {change}")
        if state.seq > 1 and not state.changes:
            click.echo("      (no change)")


@fleet_cmd.command("baseline")
@cluster_option
@accel_choice
@click.option("--machine", metavar="TYPE", help="Resolve model names as this machine type does.")
@db_option
@json_option
@click.pass_context
def baseline_cmd(ctx: click.Context, cluster: str | None, accel: str, machine: str | None, db_url: str | None,
                 as_json: bool) -> None:
    """The best CPU every host can give, the features left out (and who lacks them), what stays unused."""
    from guestcpu.fleet import api

    result = api.baseline(_store(db_url), load_catalog_for(ctx), cluster=cluster, accel=accel, machine=machine)
    if as_json:
        emit_json(result.to_json())
        return
    where = f"cluster {cluster}" if cluster else "all hosts"
    verified = sum(1 for h in result.hosts if h.verified)
    click.echo(f"baseline of {where} ({len(result.hosts)} hosts, {result.profiles} distinct, {accel}): "
               f"{result.model}")
    click.echo(result.to_json()["cpu"].rstrip())
    click.echo(f"verified startable on {verified} of {len(result.hosts)} hosts")
    for host in result.hosts:
        if not host.verified:
            click.echo(f"  {host.host}: {host.result}, not verified ({host.note})")
    if result.left_out:
        click.echo("left out (hosts lacking them):")
        for item in result.left_out:
            shown = ", ".join(item.lacking[:5]) + (f" and {len(item.lacking) - 5} more" if len(item.lacking) > 5
                                                   else "")
            click.echo(f"  {item.feature}: {shown}")
    if result.not_enabled_common:
        click.echo(f"every host offers, the baseline leaves unused: {', '.join(result.not_enabled_common)}")
    else:
        click.echo("unused: none (every feature all hosts offer is in the baseline)")
    for skipped, reason in result.skipped:
        click.echo(f"  skipped {skipped}: {reason}")
    for note in result.notes:
        click.echo(f"note: {note}")


@fleet_cmd.command("where")
@click.argument("pins", nargs=-1, metavar="PIN...")
@cluster_option
@click.option("--purpose", type=click.Choice(["migrate", "restore", "start"]), default="migrate", show_default=True)
@click.option("--count", "count_only", is_flag=True, help="Only how many hosts can take each guest (fleet scale).")
@db_option
@json_option
def where_cmd(pins: tuple[str, ...], cluster: str | None, purpose: str, count_only: bool, db_url: str | None,
              as_json: bool) -> None:
    """Which hosts can take each guest exactly as pinned, and what stops the others.

    PIN: a stored pin's name or a pin file; none: every stored pin.
    """
    from guestcpu.fleet import api

    names = [p for p in pins if not Path(p).is_file()]
    files = [(p, _read_json(p, "a guestcpu pin")) for p in pins if Path(p).is_file()]
    if count_only:
        counts = api.where_counts(_store(db_url), names, files=files, cluster=cluster, purpose=purpose)
        if as_json:
            emit_json(counts.to_json())
        else:
            for name, count in zip(counts.names, counts.counts, strict=True):
                click.echo(f"{name}: {count} of {counts.hosts} hosts")
        return
    result = api.where(_store(db_url), names, files=files, cluster=cluster, purpose=purpose)
    if as_json:
        emit_json(result.to_json())
        return
    for placement in result.pins:
        runs = f", runs on {placement.runs_on}" if placement.runs_on else ""
        click.echo(f"{placement.name} ({placement.accel}{runs}): {len(placement.hosts)} host(s) can take it")
        if placement.hosts:
            click.echo(f"  ok: {', '.join(placement.hosts)}")
        for refusal in placement.refused:
            click.echo(f"  {refusal.host}: {'; '.join(refusal.reasons)}")


@fleet_cmd.command("migrate")
@db_option
def migrate_cmd(db_url: str | None) -> None:
    """Upgrade the inventory database to this guestcpu's schema (Alembic)."""
    from guestcpu.fleet.store import default_url as default
    from guestcpu.fleet.store import describe, open_store

    store = open_store(db_url, migrate=True)
    click.echo(f"database {describe(db_url or default())} is at the current fleet schema")
    store.close()


@fleet_cmd.command("levels")
@cluster_option
@accel_choice
@db_option
@json_option
@click.pass_context
def levels_cmd(ctx: click.Context, cluster: str | None, accel: str, db_url: str | None, as_json: bool) -> None:
    """The x86-64-v1..v4 level each host can give a guest, the cluster's, and which guest OS runs where."""
    from guestcpu.fleet import api

    result = api.levels(_store(db_url), load_catalog_for(ctx), cluster=cluster, accel=accel)
    data = result.to_json()
    if as_json:
        emit_json(data)
        return
    click.echo(f"cluster level ({accel}): {data['cluster_level']} (limited by {', '.join(result.limiting)})")
    for host in result.hosts:
        more = f"; for v{host.level + 1} it lacks {', '.join(host.next_missing)}" if host.next_missing else ""
        click.echo(f"  {host.host}: {host.name}{more}")
    for placement in result.guest_os:
        click.echo(f"{placement.os.name} (needs x86-64-v{placement.os.level}): "
                   f"{len(placement.hosts)} of {len(result.hosts)} hosts"
                   + (f"; not on {', '.join(h for h, _ in placement.refused)}" if placement.refused else ""))


def _host_inputs(files: tuple[str, ...]) -> list[tuple[str, bytes, str | None]]:
    return [(path, _read(path, "a guestcpu capture (JSON) or virsh domcapabilities (XML)"), None) for path in files]


@fleet_cmd.command("what-if")
@click.option("--add", "add_files", multiple=True, metavar="FILE", help="A host to add (capture or domcapabilities).")
@click.option("--remove", "remove_hosts", multiple=True, metavar="HOST", help="A host to retire.")
@click.option("--upgrade", "upgrades", multiple=True, metavar="HOST=FILE", help="A host's state after an upgrade.")
@cluster_option
@accel_choice
@db_option
@json_option
@click.pass_context
def what_if_cmd(ctx: click.Context, add_files: tuple[str, ...], remove_hosts: tuple[str, ...],
                upgrades: tuple[str, ...], cluster: str | None, accel: str, db_url: str | None,
                as_json: bool) -> None:
    """How the cluster baseline changes, and which guests get stranded, if hosts are added, retired or upgraded.

    Nothing is stored.
    """
    from guestcpu.fleet import api

    if not (add_files or remove_hosts or upgrades):
        raise InputError("say what changes: --add FILE, --remove HOST or --upgrade HOST=FILE")
    upgrade_inputs = []
    for item in upgrades:
        host, sep, path = item.partition("=")
        if not sep or not host or not path:
            raise InputError(f"--upgrade {item!r}: expected HOST=FILE")
        upgrade_inputs.append((path, _read(path, "a guestcpu capture (JSON) or virsh domcapabilities (XML)"), host))
    result = api.what_if(_store(db_url), load_catalog_for(ctx), add=_host_inputs(add_files), remove=remove_hosts,
                         upgrade=upgrade_inputs, cluster=cluster, accel=accel)
    data = result.to_json()
    if as_json:
        emit_json(data)
        return
    change = data["baseline"]
    if change:
        verb = "changes" if change["model_changed"] else "stays"
        click.echo(f"baseline {verb}: {change['model_before']} -> {change['model_after']}")
        if change["features_gained"]:
            click.echo(f"  gains: {', '.join(change['features_gained'])}")
        if change["features_lost"]:
            click.echo(f"  loses: {', '.join(change['features_lost'])}")
    elif result.after is not None:
        click.echo(f"baseline: {result.after.model}")
    if result.after_error:
        click.echo(f"baseline after: none ({result.after_error})")
    stranded = [g for g in result.guests if g.lost_last_destination or g.cannot_start_where_it_runs]
    click.echo(f"guests stranded: {len(stranded)} of {len(result.guests)}")
    for guest in stranded:
        click.echo(f"  {guest.pin} (on {guest.runs_on or '?'}): {'; '.join(guest.reasons)}")


@fleet_cmd.command("freeze")
@click.argument("cluster")
@accel_choice
@click.option("--machine", metavar="TYPE", help="The machine type of the cluster CPU (default: newest q35 all have).")
@db_option
@json_option
@click.pass_context
def freeze_cmd(ctx: click.Context, cluster: str, accel: str, machine: str | None, db_url: str | None,
               as_json: bool) -> None:
    """Fix CLUSTER's CPU (its baseline, as a pin); later 'fleet add' refuses hosts that cannot give it."""
    from guestcpu.fleet import api

    result = api.freeze(_store(db_url), load_catalog_for(ctx), cluster, accel=accel, machine=machine)
    if as_json:
        emit_json(result.to_json())
        return
    abi = result.pin.abi
    click.echo(f"cluster {cluster} frozen to {abi.model} on {abi.machine} ({accel}), {result.pin.fingerprint}")
    click.echo(f"  {abi.vendor} family {abi.family} model {abi.model_number}, {len(abi.required)} features required")


@fleet_cmd.command("report")
@click.option("-o", "--output", required=True, metavar="FILE.html", help="Where to write the page ('-': stdout).")
@cluster_option
@accel_choice
@db_option
@json_option
@click.pass_context
def report_cmd(ctx: click.Context, output: str, cluster: str | None, accel: str, db_url: str | None,
               as_json: bool) -> None:
    """A self-contained HTML page: hosts x models (usable / blocked by N), the cluster CPU, stranded guests."""
    from guestcpu.fleet.report import fleet_report, render_report
    from guestcpu.formats.files import write_output

    data = fleet_report(_store(db_url), load_catalog_for(ctx), cluster=cluster, accel=accel)
    write_output(output, render_report(data), what="the report")  # whole or not at all
    if output == "-":
        return
    summary = data.summary()
    if as_json:
        emit_json({"output": output, **summary})
        return
    click.echo(f"report of {summary['hosts']} hosts x {summary['models']} models "
               f"({summary['stranded']} stranded guests) -> {output}")
