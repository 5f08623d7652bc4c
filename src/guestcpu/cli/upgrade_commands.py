"""``guestcpu upgrade-check``: what a QEMU, microcode or kernel upgrade does to pinned guests, before it."""

from __future__ import annotations

from typing import Any

import click

from guestcpu.cli.common import emit_json, json_option
from guestcpu.errors import InputError

#: Exit status when any guest breaks (as migrate-check's refusal).
EXIT_BROKEN = 2


@click.command("upgrade-check")
@click.option("--pins", "pins_dir", required=True, metavar="DIR",
              help="The pins (*.json written by 'guestcpu define') of the guests on this host.")
@click.option("--qemu", "new_binary", metavar="NEW_BINARY",
              help="The QEMU binary after the upgrade (probed on this host, beside the current one).")
@click.option("--to", "to_capture", metavar="CAPTURE",
              help="A capture of this host after the change ('guestcpu capture' after a microcode or kernel "
                   "update, or on a host already upgraded).")
@click.option("--from", "from_capture", metavar="CAPTURE",
              help="A capture of this host before the change (default: this host now).")
@click.option("--old-qemu", "old_binary", metavar="PATH", envvar="GUESTCPU_QEMU",
              help="The QEMU binary before the upgrade (default: qemu-system-x86_64 on PATH).")
@json_option
def upgrade_check_cmd(pins_dir: str, new_binary: str | None, to_capture: str | None, from_capture: str | None,
                      old_binary: str | None, as_json: bool) -> None:
    """For every pinned guest: does it still start after the upgrade, and can it still live-migrate between
    the old and the new side in both directions?  Names what stops it; exit 2 when any guest breaks."""
    from guestcpu.cli.lifecycle_commands import _read_pins_dir
    from guestcpu.lifecycle.capture import capture_host
    from guestcpu.lifecycle.documents import read_capture
    from guestcpu.lifecycle.upgrade import upgrade_check

    if (new_binary is None) == (to_capture is None):
        raise InputError("give the new side as --qemu NEW_BINARY or --to CAPTURE (one of them)")
    if from_capture is not None and old_binary is not None:
        raise InputError("give the old side as --from CAPTURE or --old-qemu PATH, not both")
    pins = _read_pins_dir(pins_dir)
    old = read_capture(from_capture) if from_capture is not None else capture_host(old_binary)
    new = read_capture(to_capture) if to_capture is not None else capture_host(new_binary)
    report = upgrade_check(pins, old, new)
    if as_json:
        emit_json(report.to_json())
    else:
        _print(report.to_json())
    if report.broken:
        raise SystemExit(EXIT_BROKEN)


_COLUMNS = (("start", "starts after"), ("migrate_old_to_new", "old → new"), ("migrate_new_to_old", "new → old"))


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    changes = ", ".join(report["changes"]) or "nothing"
    table = Table(title=f"upgrade: {report['old']}  →  {report['new']}  (changes: {changes})")
    for column in ("guest", "model", "machine", "before", *(title for _, title in _COLUMNS), "what stops it"):
        table.add_column(column)
    for guest in report["guests"]:
        reasons = [] if guest["starts_before"] else [f"before: {r}" for r in guest["reasons_before"]]
        cells = []
        for key, title in _COLUMNS:
            answer = guest[key]
            cells.append("yes" if answer["ok"] else "[red]NO[/red]")
            reasons += [f"{title}: {r}" for r in answer["reasons"]]
        before = "yes" if guest["starts_before"] else "no"
        table.add_row(guest["guest"], guest["model"], guest["machine"], before, *cells, "\n".join(reasons))
    console.print(table)
    broken = report["guests_broken"]
    if broken:
        console.print(f"{len(broken)} of {len(report['guests'])} guests break: {', '.join(broken)}")
    else:
        console.print(f"none of {len(report['guests'])} guests breaks")
