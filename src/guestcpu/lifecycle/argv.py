"""The QEMU arguments that give a guest exactly its pinned CPU (pure).

A custom pin is passed as its versioned model with *every* property explicit:
vendor, family, model, stepping, level, xlevel, the machine-dependent properties and
each feature ``=on``/``=off``; so neither a model's defaults in another QEMU build nor
a ``-global`` in someone's wrapper can change what the guest sees.

``model-id`` goes through ``-global`` instead of ``-cpu``: QEMU splits ``-cpu`` on
commas without any escaping, and model-ids such as "Intel Core Processor (Skylake,
IBRS)" contain commas; ``-global driver=...,property=...,value=...`` takes ``,,`` as
an escaped comma (measured with QEMU 7.2).

This is the only place QEMU's CPU arguments are built: ``run`` and ``cmdline`` pin a
loose definition in memory first (``lifecycle.run``), so every launch is of a pin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from guestcpu.errors import InputError
from guestcpu.lifecycle.abi import ABI_PROPS, REQUESTED_KEY, topology_of
from guestcpu.lifecycle.pin import Abi
from guestcpu.model.cpu import Topology
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.process import base_args


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _check_safe(name: str, value: str) -> None:
    if "," in value or "," in name:
        raise InputError(f"pinned CPU property {name}={value!r} contains a comma, which -cpu cannot carry")


def cpu_model_arg(abi: Abi, known: Iterable[str] | None = None) -> str:
    """The ``-cpu`` value.  ``known``: the destination QEMU's feature names (omits disabled unknowns)."""
    known_set = set(known) if known is not None else None
    if abi.mode in ("host-passthrough", "maximum"):
        name = "host" if (abi.mode == "host-passthrough" and abi.accel == "kvm") else "max"
        requested = abi.props.get(REQUESTED_KEY) or {}
        parts = [name] + [f"{k}={_value(v)}" for k, v in sorted(requested.items())]
        return ",".join(parts)
    parts = [
        abi.model,
        f"vendor={abi.vendor}",
        f"family={abi.family}",
        f"model={abi.model_number}",
        f"stepping={abi.stepping}",
        f"level={abi.level}",
        f"xlevel={abi.xlevel}",
    ]
    parts += [f"{key}={_value(abi.props[key])}" for key in ABI_PROPS if key in abi.props]
    for name in sorted(abi.features):
        on = abi.features[name]
        if known_set is not None and name not in known_set and not on:
            continue  # a feature this QEMU does not know is off anyway, and naming it would fail
        parts.append(f"{name}={_value(on)}")
    for part in parts:
        _check_safe(part.split("=", 1)[0], part.split("=", 1)[-1])
    return ",".join(parts)


def cpu_typename(abi: Abi, caps: QemuCaps | None) -> str:
    """The QOM type of the pin's model, as the probe reported it (``Westmere-v1-x86_64-cpu``).

    Without capabilities (a pin checked on its own) QEMU's naming rule is applied to the pin's arch.
    """
    entry = caps.model(abi.model) if caps is not None else None
    if entry is not None and entry.typename:
        return entry.typename
    return f"{abi.model}-{abi.arch}-cpu"


def model_id_global(abi: Abi, typename: str | None = None) -> list[str]:
    if abi.mode != "custom":
        return []
    value = abi.model_id.replace(",", ",,")
    return ["-global", f"driver={typename or cpu_typename(abi, None)},property=model-id,value={value}"]


def cpu_args(abi: Abi, caps: QemuCaps | None = None, known: Iterable[str] | None = None) -> list[str]:
    """``-cpu`` (and the ``-global`` carrying model-id) for this pin on the QEMU ``caps`` describes."""
    return ["-cpu", cpu_model_arg(abi, known), *model_id_global(abi, cpu_typename(abi, caps))]


def smp_args(topology: Topology | None) -> list[str]:
    """``-smp`` for a topology: CPUID leaves 0x4/0xb/0x1f depend on it, so it is part of the ABI."""
    if topology is None:
        return []
    dies = topology.dies or 1
    clusters = topology.clusters or 1
    total = topology.sockets * dies * clusters * topology.cores * topology.threads
    spec = f"{total},sockets={topology.sockets}"
    if topology.dies is not None:
        spec += f",dies={dies}"
    if topology.clusters is not None:
        spec += f",clusters={clusters}"
    return ["-smp", f"{spec},cores={topology.cores},threads={topology.threads}"]


def guest_args(
    abi: Abi, known: Iterable[str] | None = None, *, paused: bool = True, caps: QemuCaps | None = None
) -> list[str]:
    """Machine, accelerator, topology and CPU arguments of a guest with this pin (no devices)."""
    args = base_args(abi.machine, abi.accel)
    if paused:
        args.append("-S")
    return [*args, *smp_args(topology_of(abi)), *cpu_args(abi, caps, known)]


#: Options that would change what the pin fixes; extra QEMU arguments must not carry them.
PINNED_OPTIONS = frozenset({"cpu", "machine", "M", "accel", "smp", "enable-kvm"})


def check_extra_args(extra: Sequence[str]) -> None:
    """Refuse extra QEMU arguments that would override the pin (a CPU ``-global`` included)."""
    for i, arg in enumerate(extra):
        name = arg.split("=", 1)[0].lstrip("-") if arg.startswith("-") else ""
        value = extra[i + 1] if i + 1 < len(extra) else ""
        # A -global on a CPU type (driver "<model>-<arch>-cpu") changes the CPU as much as -cpu does.
        cpu_global = name == "global" and re.search(r"-cpu(?:[.,]|$)", value) is not None
        if name in PINNED_OPTIONS or cpu_global:
            shown = f"{arg} {value}" if value and not value.startswith("-") and name != "enable-kvm" else arg
            raise InputError(
                f"extra QEMU argument {shown} would change what the pin fixes (CPU, machine type, accelerator, "
                "topology); define the guest again instead"
            )
