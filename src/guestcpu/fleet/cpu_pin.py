"""A pin from recorded capabilities: the cluster CPU of ``fleet freeze`` (pure).

``guestcpu define`` pins a guest in a running QEMU with its machine type.  A cluster's
frozen CPU is a fleet-wide promise instead: the baseline's versioned model as the
hosts' QEMU expands it (recorded in their capabilities), made into a pin by define's
own two steps (``build_abi``, ``make_pin``): every feature QEMU knows explicit, vendor,
family, model and model-id spelled out, and a fingerprint.  Its ``warnings`` say it
was not expanded in a running QEMU; a guest given this CPU is pinned with ``define``
as usual.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.lifecycle.abi import build_abi
from guestcpu.lifecycle.define import make_pin
from guestcpu.lifecycle.pin import Pin, PinPolicy, Resolution
from guestcpu.model.cpu import CpuDefinition, Policy
from guestcpu.model.names import version_of
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.machine import Expanded


def newest_common_machine(caps_list: list[QemuCaps]) -> str:
    """The newest versioned q35 machine type every QEMU has (else the first one's default)."""
    common: set[str] | None = None
    for caps in caps_list:
        names = {m.name for m in caps.machines if m.name.startswith("pc-q35-")}
        common = names if common is None else common & names
    if common:
        def key(name: str) -> tuple[int, ...]:
            return tuple(int(p) for p in re.findall(r"\d+", name))
        return max(common, key=key)
    default = caps_list[0].default_machine() if caps_list else None
    if default is None:
        raise InputError("the hosts' QEMUs have no machine type in common; pass --machine")
    return default.name


def overrides_of(cpu: CpuDefinition, catalog: Catalog) -> dict[str, bool]:
    """The explicit features of a baseline ``<cpu>`` in QEMU's spelling."""
    found = {}
    for request in cpu.features:
        on = request.policy in (None, Policy.REQUIRE, Policy.FORCE)
        found[catalog.feature(request.name).qemu_name] = on
    return found


def pin_from_caps(
    caps: QemuCaps, qemu_model: str, overrides: Mapping[str, bool], machine: str, catalog: Catalog, *,
    note: str,
) -> Pin:
    """``define``'s pin (``build_abi``, ``make_pin``) of ``qemu_model`` as ``caps`` recorded its expansion.

    A recorded expansion is QEMU's static one: every property it leaves out is off, and it
    has the model's ``min-level``/``min-xlevel`` where a running QEMU reports the level it
    settles on, so those stand in for level and xlevel.
    """
    entry = caps.model(qemu_model)
    if entry is None or entry.expansion is None:
        raise InputError(f"QEMU {caps.qemu_version} ({caps.accel}) has no expansion of {qemu_model}")
    props = entry.expansion.props
    static = {name: False for name in caps.known_props} | dict(props) | dict(overrides)
    full = {"level": props.get("level", props.get("min-level", 0)),
            "xlevel": props.get("xlevel", props.get("min-xlevel", 0))}
    abi = build_abi(Expanded(qemu_model, static, full), arch=caps.arch, accel=caps.accel, machine=machine,
                    mode="custom", version=version_of(qemu_model))
    return make_pin(
        abi, PinPolicy(mode="custom", match="exact"), Resolution(qemu_model, qemu_model, "explicit", (note,)), caps,
        caps.binary, catalog,
        warnings=("computed from the hosts' recorded QEMU capabilities, not expanded in a running QEMU; "
                  "pin each guest with 'guestcpu define'",),
    )
