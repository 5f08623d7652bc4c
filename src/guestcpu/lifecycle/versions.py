"""How a model name resolves per machine type, as a table for people (pure).

The resolution itself is ``qemu.request`` (one place for define, run and the
hypervisor compare); the names are re-exported here for the lifecycle code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.model.names import base_of
from guestcpu.qemu.caps import RESOLVE_LATEST, RESOLVE_LEGACY, RESOLVE_V1, QemuCaps
from guestcpu.qemu.request import ModelChoice as ModelChoice
from guestcpu.qemu.request import ModelNotInQemuError as ModelNotInQemuError
from guestcpu.qemu.request import latest_common
from guestcpu.qemu.request import machine_choice as machine_choice
from guestcpu.qemu.request import resolve_model as resolve_model


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """pc-i440fx-2.9 before pc-i440fx-2.10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class MachineTypeRow:
    rule: str
    resolves_to: str
    machines: tuple[str, ...]
    note: str


_RULE_NOTES = {
    RESOLVE_LEGACY: "the unversioned definition as QEMU first shipped it (pre-4.1 machine types)",
    RESOLVE_V1: "version 1 (machine types 4.1 and newer)",
    RESOLVE_LATEST: "the newest version QEMU has",
}


def machine_type_table(name: str, catalog: Catalog, caps: QemuCaps | None) -> list[MachineTypeRow]:
    """How ``name`` resolves per machine type (from a QEMU's machine list when given)."""
    model = catalog.model(name)
    family = model.family or name
    versions = catalog.versions(family)
    bare = model.alias_of is not None and base_of(model.alias_of) == name
    if not bare:
        target = model.alias_of or name
        note = "a named variant or explicit version means the same on every machine type"
        return [MachineTypeRow("fixed", target, (), note)]
    latest = versions[-1].name if versions else name
    rows: list[MachineTypeRow] = []
    for rule in (RESOLVE_LEGACY, RESOLVE_V1, RESOLVE_LATEST):
        if rule == RESOLVE_LEGACY:
            target = f"{name} (legacy)"
        elif rule == RESOLVE_V1:
            target = model.alias_of or f"{name}-v1"
        else:
            target = caps.latest_versions().get(name, latest) if caps else latest
        if caps is not None:
            names = [m.name for m in caps.machines if m.resolves == rule and m.name != "none"]
            machines = tuple(sorted(names, key=natural_key))
        else:
            machines = {
                RESOLVE_LEGACY: ("pc-i440fx-* and pc-q35-* up to 4.0", "isapc"),
                RESOLVE_V1: ("pc-i440fx-* and pc-q35-* from 4.1", "none"),
                RESOLVE_LATEST: ("microvm",),
            }[rule]
        rows.append(MachineTypeRow(rule, target, machines, _RULE_NOTES[rule]))
    new_target = latest_common(name, caps, catalog)[0] if caps else latest
    rows.append(MachineTypeRow("new definition", new_target, (), "a new guest gets the latest version, pinned at once"))
    return rows
