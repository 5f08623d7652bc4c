"""``define``: pin a guest's CPU once, for its machine type, accelerator and QEMU.

1. the capabilities of the QEMU binary under the guest's accelerator (cached probe);
2. the guest's machine type (an alias such as ``pc`` becomes the concrete versioned
   type, which is what keeps the ABI stable);
3. the request: model, version and properties (``request``; the machine type's
   default CPU when the definition has none);
4. QEMU's expansion of that request in a paused QEMU with that machine type
   (``machine_expansion``), which becomes the ABI, its fingerprint and the pin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError, suggest
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpu
from guestcpu.lifecycle.abi import build_abi, topology_json, topology_of, topology_reported
from guestcpu.lifecycle.definition import GuestDefinition
from guestcpu.lifecycle.libvirt_form import libvirt_xml
from guestcpu.lifecycle.pin import Pin, PinPolicy, Resolution
from guestcpu.lifecycle.request import CpuRequest, default_cpu, plan_request
from guestcpu.model.cpu import CpuDefinition, Topology
from guestcpu.qemu.caps import MachineCaps, QemuCaps
from guestcpu.qemu.machine import MachineSession
from guestcpu.qemu.offer import supported_features
from guestcpu.qemu.process import DEFAULT_TIMEOUT, resolve_binary, run_sync


@dataclass(frozen=True)
class Target:
    """Where a CPU is pinned: a QEMU binary, its capabilities under one accelerator, a machine type."""

    binary: str
    caps: QemuCaps
    machine: MachineCaps

    @property
    def accel(self) -> str:
        return self.caps.accel


def pick_machine(caps: QemuCaps, name: str | None) -> MachineCaps:
    """The concrete machine type for ``name`` (an alias such as ``pc`` resolved; None: QEMU's default)."""
    if name is None:
        found = caps.default_machine()
        if found is None:
            raise InputError(f"QEMU {caps.qemu_version} has no default machine type; pass --machine TYPE")
        return found
    found = caps.machine(name)
    if found is None:
        names = [m.name for m in caps.machines] + [m.alias for m in caps.machines if m.alias]
        hints = suggest(name, names)
        hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        raise InputError(f"unknown machine type '{name}' for QEMU {caps.qemu_version}{hint}")
    if found.name == "none":
        raise InputError("machine type 'none' has no CPU to pin; give the guest's real machine type")
    return found


def load_target(
    binary: str | None,
    accel: str,
    machine: str | None,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
    caps: QemuCaps | None = None,
) -> Target:
    from guestcpu.qemu.cache import load_caps
    from guestcpu.qemu.probe import check_accel

    path = resolve_binary(binary)
    check_accel(accel)
    if caps is None:
        caps = load_caps(path, accel, cache_dir=cache_dir, refresh=refresh).caps
    return Target(path, caps, pick_machine(caps, machine))


async def pin_cpu_async(
    cpu: CpuDefinition | None,
    target: Target,
    catalog: Catalog,
    *,
    existing: bool = False,
    topology: Topology | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Pin:
    """Pin ``cpu`` (None: the machine type's default CPU) with ``topology`` on ``target``."""
    default_used = cpu is None
    loose = cpu if cpu is not None else default_cpu(target.machine)
    async with MachineSession(target.binary, target.accel, target.machine.name, timeout) as session:
        aliases = await session.aliases() if existing else None
        request = plan_request(loose, target.caps, catalog, target.machine, existing=existing, machine_aliases=aliases)
        expanded = await session.expand(request.choice.qemu_model, request.props)
    requested_features = {k: v for k, v in request.props.items() if isinstance(v, bool)}
    abi = build_abi(
        expanded,
        arch=target.caps.arch,
        accel=target.accel,
        machine=target.machine.name,
        mode=request.abi_mode,
        version=request.choice.version,
        requested_features=requested_features,
        topology=topology,
        topology_features=topology_reported(
            topology_json(topology), str(expanded.static.get("vendor", "")), target.caps.qemu_version),
    )
    caps = target.caps
    warnings = list(request.warnings)
    missing = sorted(set(abi.required) - supported_features(caps) - topology_reported(
        abi.topology, abi.vendor, caps.qemu_version))
    if missing:
        where = "TCG" if target.accel == "tcg" else "this host under KVM"
        warnings.append(f"{where} cannot give this CPU now (QEMU {caps.qemu_version}); missing: {', '.join(missing)}")
    host = caps.host_static.to_json() if (request.abi_mode != "custom" and caps.host_static) else None
    return Pin(
        abi=abi,
        policy=_policy(request, cpu, existing, default_used),
        resolution=Resolution(request.requested, request.choice.qemu_model, request.choice.rule, request.choice.notes),
        made_with={
            "qemu_version": caps.qemu_version,
            "package": caps.package,
            "binary": target.binary,
            "guestcpu": __version__,
        },
        host=host,
        libvirt_cpu=libvirt_xml(abi, catalog),
        warnings=tuple(warnings),
    )


def _policy(request: CpuRequest, cpu: CpuDefinition | None, existing: bool, default_used: bool) -> PinPolicy:
    return PinPolicy(
        mode=request.definition_mode,
        match=request.match,
        recompute=request.recompute,
        definition=format_cpu(cpu) if cpu is not None else "",
        existing=existing,
        default_cpu=default_used,
    )


def define(
    guest: GuestDefinition,
    catalog: Catalog,
    *,
    binary: str | None = None,
    accel: str | None = None,
    machine: str | None = None,
    existing: bool = False,
    cache_dir: Path | None = None,
    refresh: bool = False,
    caps: QemuCaps | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Pin:
    """Pin a guest definition: options win over what the domain XML says, then QEMU's defaults."""
    from guestcpu.qemu.probe import default_accel

    accel = accel or guest.accel or default_accel()
    target = load_target(binary, accel, machine or guest.machine, cache_dir=cache_dir, refresh=refresh, caps=caps)
    check_vcpus(guest.topology, target.machine)
    pin: Pin = run_sync(
        pin_cpu_async(guest.cpu, target, catalog, existing=existing, topology=guest.topology, timeout=timeout)
    )
    return replace(pin, name=guest.name, uuid=guest.uuid)


def check_vcpus(topology: Topology | None, machine: MachineCaps) -> None:
    """The guest's vCPU count within what its machine type takes (QEMU's cpu-max)."""
    if topology is None or machine.cpu_max is None:
        return
    total = topology.sockets * (topology.dies or 1) * (topology.clusters or 1) * topology.cores * topology.threads
    if total > machine.cpu_max:
        raise InputError(
            f"the guest has {total} vCPUs but machine type {machine.name} takes at most {machine.cpu_max}; "
            "use fewer vCPUs or a machine type that takes more (q35)"
        )


def loose_cpu(pin: Pin) -> CpuDefinition | None:
    """The definition a pin was made from (None: the machine type's default CPU)."""
    if not pin.policy.definition:
        return None
    return parse_cpu(pin.policy.definition.encode(), "the pin's definition")


def recompute(pin: Pin, target: Target, catalog: Catalog, timeout: float = DEFAULT_TIMEOUT) -> Pin:
    """Pin the same definition again from ``target``'s current capabilities."""
    result: Pin = run_sync(
        pin_cpu_async(
            loose_cpu(pin), target, catalog, existing=pin.policy.existing, topology=topology_of(pin.abi),
            timeout=timeout,
        )
    )
    return replace(result, name=pin.name, uuid=pin.uuid)
