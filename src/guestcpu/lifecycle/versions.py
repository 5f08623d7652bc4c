"""Which versioned model an unversioned name means (pure).

* a **new** definition: a bare name means the latest version that both the catalog
  and the target QEMU provide, pinned at once;
* an **existing** guest (``define --existing``): the name means what QEMU made of it
  on the guest's machine type, which is what the guest has been running with:
  pc/q35 <= 4.0 (and isapc) run the unversioned *legacy* definition, newer pc/q35 v1,
  microvm the latest version (QEMU 7.2, measured; ``qemu.caps.machine_resolution``).

Named variants (``Skylake-Client-IBRS`` -> ``-v2``) are fixed aliases on every machine
type, and an explicit ``-vN`` is taken as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError, suggest
from guestcpu.lifecycle.pin import LEGACY
from guestcpu.model.names import base_of
from guestcpu.model.names import version_of as version_of  # re-exported for the request logic
from guestcpu.qemu.caps import RESOLVE_LATEST, RESOLVE_LEGACY, RESOLVE_V1, MachineCaps, QemuCaps
from guestcpu.qemu.hypervisor import latest_common

#: QEMU models that are not versioned definitions: they stand for what the accelerator has.
SPECIAL_MODELS = ("host", "max", "base")


@dataclass(frozen=True)
class ModelChoice:
    #: the name passed to ``-cpu``
    qemu_model: str
    version: int | str | None
    rule: str
    notes: tuple[str, ...] = ()


class ModelNotInQemuError(InputError):
    def __init__(self, name: str, qemu_version: str, known: Iterable[str]) -> None:
        self.name = name
        hints = suggest(name, known)
        hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        super().__init__(f"CPU model '{name}' is not provided by QEMU {qemu_version}{hint}")




def machine_choice(name: str, caps: QemuCaps, rule: str) -> ModelChoice:
    """What an unversioned ``name`` is on a machine type that resolves by ``rule``."""
    entry = caps.model(name)
    alias_of = entry.alias_of if entry is not None else None
    if rule == RESOLVE_LEGACY:
        return ModelChoice(name, LEGACY, RESOLVE_LEGACY)
    if rule == RESOLVE_LATEST:
        newest = caps.latest_versions().get(name, alias_of or name)
        return ModelChoice(newest, version_of(newest), RESOLVE_LATEST)
    target = alias_of or f"{name}-v1"
    return ModelChoice(target, version_of(target), RESOLVE_V1)


def resolve_model(
    name: str,
    caps: QemuCaps,
    catalog: Catalog,
    *,
    existing: bool,
    machine: MachineCaps,
    machine_aliases: Mapping[str, str | None] | None = None,
) -> ModelChoice:
    """The versioned ``-cpu`` model for ``name`` in a new or existing definition.

    ``machine_aliases`` is QEMU's own ``alias-of`` per model in a process started with
    the guest's machine type (None for no alias, i.e. legacy), when it was measured.
    Where the rule and QEMU disagree, QEMU wins and a note says so.
    """
    entry = caps.model(name)
    if entry is None:
        raise ModelNotInQemuError(name, caps.qemu_version, caps.model_names())
    if name in SPECIAL_MODELS:
        return ModelChoice(name, None, "explicit")
    if entry.alias_of is None:
        return ModelChoice(name, version_of(name), "explicit")
    if base_of(entry.alias_of) != name:
        return ModelChoice(entry.alias_of, version_of(entry.alias_of), "alias")
    if not existing:
        latest, notes = latest_common(name, caps, catalog)
        return ModelChoice(latest, version_of(latest), "latest-common", notes)
    choice = machine_choice(name, caps, machine.resolves)
    if machine_aliases is None or name not in machine_aliases:
        return choice
    alias = machine_aliases[name]
    if alias is None:
        measured = ModelChoice(name, LEGACY, RESOLVE_LEGACY)
    else:
        measured = ModelChoice(alias, version_of(alias), choice.rule)
    if measured.qemu_model == choice.qemu_model and measured.version == choice.version:
        return choice
    note = (
        f"QEMU runs {name} as {measured.qemu_model} ({measured.version}) on {machine.name}, "
        f"not {choice.qemu_model} as the {machine.resolves} rule says; QEMU's answer is pinned"
    )
    return ModelChoice(measured.qemu_model, measured.version, "measured", (note,))


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
