"""A pin from recorded capabilities: the cluster CPU of ``fleet freeze`` (pure).

``guestcpu define`` pins a guest in a running QEMU with its machine type.  A cluster's
frozen CPU is a fleet-wide promise instead: the baseline's versioned model as the
hosts' QEMU expands it (recorded in their capabilities), every feature QEMU knows
explicit, vendor, family, model and model-id spelled out, and a fingerprint.  Its
``warnings`` say it was not expanded in a running QEMU; a guest given this CPU is
pinned with ``define`` as usual.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.lifecycle.libvirt_form import libvirt_xml
from guestcpu.lifecycle.pin import Abi, Pin, PinPolicy, Resolution
from guestcpu.model.cpu import CpuDefinition, Policy
from guestcpu.model.names import version_of
from guestcpu.qemu.caps import QemuCaps


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
    entry = caps.model(qemu_model)
    if entry is None or entry.expansion is None:
        raise InputError(f"QEMU {caps.qemu_version} ({caps.accel}) has no expansion of {qemu_model}")
    props = entry.expansion.props
    features = {name: False for name in caps.known_props}
    features.update({name: True for name in entry.expansion.enabled})
    features.update(overrides)
    abi = Abi(
        arch=caps.arch, accel=caps.accel, machine=machine, mode="custom", model=qemu_model,
        version=version_of(qemu_model), vendor=str(props.get("vendor", "")),
        family=int(props.get("family", 0)), model_number=int(props.get("model", 0)),
        stepping=int(props.get("stepping", 0)), level=int(props.get("min-level", props.get("level", 0))),
        xlevel=int(props.get("min-xlevel", props.get("xlevel", 0))), model_id=str(props.get("model-id", "")),
        features=features,
    )
    return Pin(
        abi=abi,
        policy=PinPolicy(mode="custom", match="exact"),
        resolution=Resolution(qemu_model, qemu_model, "explicit", (note,)),
        made_with={"qemu_version": caps.qemu_version, "package": caps.package, "binary": caps.binary,
                   "guestcpu": __version__},
        libvirt_cpu=libvirt_xml(abi, catalog),
        warnings=("computed from the hosts' recorded QEMU capabilities, not expanded in a running QEMU; "
                  "pin each guest with 'guestcpu define'",),
    )
