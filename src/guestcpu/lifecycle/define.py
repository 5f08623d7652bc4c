"""``define``: pin a guest's CPU once, for its machine type, accelerator and QEMU.

1. the capabilities of the QEMU binary under the guest's accelerator (cached probe);
2. the guest's machine type (an alias such as ``pc`` becomes the concrete versioned
   type, which is what keeps the ABI stable);
3. the request: model, version and properties (``request``; the machine type's
   default CPU when the definition has none);
4. QEMU's expansion of that request in a paused QEMU with that machine type
   (``machine_expansion``), which becomes the ABI, its fingerprint and the pin.

Two rules keep the pin what the definition says: a required feature QEMU turns off
because its gate is off (``rdctl-no`` without ``arch-capabilities``) gets its gate
enabled, with a warning, or the definition is refused; and the vendor QEMU reports is
the one the definition names.  A host-relative CPU under KVM is started once on trial:
a KVM that refuses an MSR QEMU sets (``gates``) gets a host-model without that MSR's
features, saying so, or one clear error for host-passthrough and maximum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.gates import MSR_GATES, failed_msr, gate_of, msr_name, without_msr
from guestcpu.errors import InputError, suggest
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpu
from guestcpu.lifecycle.abi import build_abi, topology_given, topology_json, topology_of
from guestcpu.lifecycle.argv import guest_args
from guestcpu.lifecycle.definition import GuestDefinition
from guestcpu.lifecycle.gates import msr_refusal
from guestcpu.lifecycle.levels import level_cpu
from guestcpu.lifecycle.libvirt_form import libvirt_xml
from guestcpu.lifecycle.pin import Abi, Pin, PinPolicy, Resolution
from guestcpu.lifecycle.request import CpuRequest, default_cpu, plan_request
from guestcpu.model.cpu import CpuDefinition, Policy, Topology
from guestcpu.qemu.caps import MachineCaps, QemuCaps
from guestcpu.qemu.machine import Expanded, MachineSession
from guestcpu.qemu.offer import known_features, supported_features
from guestcpu.qemu.process import DEFAULT_TIMEOUT, QemuProcess, QemuStartError, resolve_binary, run_sync


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
    loose = level_cpu(cpu if cpu is not None else default_cpu(target.machine), catalog)
    warnings: list[str] = []
    async with MachineSession(target.binary, target.accel, target.machine.name, timeout) as session:
        aliases = await session.aliases() if existing else None
        request = plan_request(loose, target.caps, catalog, target.machine, existing=existing, machine_aliases=aliases)
        props = dict(request.props)
        model = request.choice.qemu_model
        expanded = await session.expand(model, props)
        if _gated_off(props, expanded, _named_required(loose, catalog), catalog):
            expanded = await _enable_gates(session, model, props, expanded, _named_required(loose, catalog),
                                           catalog, warnings)
        _check_vendor_given(props, expanded, loose)
        abi = _abi(expanded, target, request.abi_mode, request.choice.version, props, topology)
        if target.accel == "kvm":
            abi = await _kvm_trial(session, abi, request, props, target, catalog, topology, timeout, warnings)
    if abi.family == 0 and abi.model_number == 0:
        # QEMU 10's max under TCG gets its family/model/stepping only when the vCPU is realized:
        # the expansion says 0/0/0, so the pin takes the identity the started vCPU has.
        abi = await _realized_identity(abi, target, timeout)
        warnings.append(f"QEMU {target.caps.qemu_version} reports {abi.model}'s family/model only once the vCPU "
                        f"exists; pinned as started: family {abi.family} model {abi.model_number} "
                        f"stepping {abi.stepping}")
    caps = target.caps
    warnings = [*request.warnings, *warnings]
    missing = sorted(set(abi.required) - supported_features(caps) - topology_given(abi.topology, abi.vendor))
    if missing:
        where = "TCG" if target.accel == "tcg" else "this host under KVM"
        warnings.append(f"{where} cannot give this CPU now (QEMU {caps.qemu_version}); missing: {', '.join(missing)}")
    host = caps.host_static.to_json() if (request.abi_mode != "custom" and caps.host_static) else None
    resolution = Resolution(request.requested, request.choice.qemu_model, request.choice.rule, request.choice.notes)
    return make_pin(abi, _policy(request, cpu, existing, default_used), resolution, caps, target.binary, catalog,
                    warnings=warnings, host=host)


def make_pin(
    abi: Abi, policy: PinPolicy, resolution: Resolution, caps: QemuCaps, binary: str, catalog: Catalog, *,
    warnings: Sequence[str] = (), host: Mapping[str, Any] | None = None,
) -> Pin:
    """The pin of ``abi``: its provenance (``caps``' QEMU), its libvirt form, what was learnt on the way."""
    return Pin(
        abi=abi,
        policy=policy,
        resolution=resolution,
        made_with={
            "qemu_version": caps.qemu_version,
            "package": caps.package,
            "binary": binary,
            "guestcpu": __version__,
        },
        host=host,
        libvirt_cpu=libvirt_xml(abi, catalog),
        warnings=tuple(warnings),
    )


async def _kvm_trial(
    session: MachineSession, abi: Abi, request: CpuRequest, props: dict[str, object], target: Target,
    catalog: Catalog, topology: Topology | None, timeout: float, warnings: list[str],
) -> Abi:
    """Start a KVM pin once where QEMU may write an MSR this KVM refuses; the pin that starts.

    host-model: re-pinned without the refused MSR's features (saying so); host-passthrough and
    maximum: one clear error; a named model: pinned as asked, with a warning.
    """
    if not request.recompute and not _sets_gated_msr(abi):
        return abi
    where = f"{target.binary}, {target.accel}, {target.machine.name}"
    failure = await _trial_start(abi, target, timeout)
    if failure is None:
        return abi
    msr = failed_msr(failure.stderr_tail)
    if not request.recompute:
        refusal = msr_refusal(failure.stderr_tail, abi, catalog, where)
        if refusal is not None:
            warnings.append(f"this pin will not start on this host now: {refusal}")
        return abi
    if msr is None or request.abi_mode != "custom":
        raise msr_refusal(failure.stderr_tail, abi, catalog, where) or failure
    off = without_msr(msr, catalog, target.caps.known_props)
    props.update(off)
    model = request.choice.qemu_model
    renewed = _abi(await session.expand(model, props), target, request.abi_mode, request.choice.version, props,
                   topology)
    dropped = sorted(n for n in off if abi.features.get(n) and not renewed.features.get(n))
    warnings.append(
        f"KVM here refuses to set {msr_name(msr)} (QEMU would abort at start-up), so this host-model "
        f"has {', '.join(dropped)} off"
    )
    return renewed


def _abi(
    expanded: Expanded, target: Target, mode: str, version: int | str | None, props: dict[str, object],
    topology: Topology | None,
) -> Abi:
    return build_abi(
        expanded,
        arch=target.caps.arch,
        accel=target.accel,
        machine=target.machine.name,
        mode=mode,
        version=version,
        requested_features={k: v for k, v in props.items() if isinstance(v, bool)},
        topology=topology,
        topology_features=topology_given(topology_json(topology), str(expanded.static.get("vendor", ""))),
    )


def _named_required(cpu: CpuDefinition, catalog: Catalog) -> dict[str, str]:
    """QEMU name -> the definition's name, of every feature the definition requires itself."""
    named = {}
    for request in cpu.features:
        if (request.policy or Policy.REQUIRE) in (Policy.REQUIRE, Policy.FORCE) and catalog.has_feature(request.name):
            named[catalog.feature(request.name).qemu_name] = request.name
    return named


def _gated_off(props: dict[str, object], expanded: Expanded, named: dict[str, str], catalog: Catalog) -> list[str]:
    """Features the definition requires that QEMU's expansion has off."""
    return [name for name in named if props.get(name) is True and expanded.static.get(name) is False]


async def _enable_gates(
    session: MachineSession, model: str, props: dict[str, object], expanded: Expanded, named: dict[str, str],
    catalog: Catalog, warnings: list[str],
) -> Expanded:
    """Turn on the gate of every required feature QEMU turned off, or refuse (``props`` is updated).

    Gates chain (``vmx-ept`` needs ``vmx-secondary-ctls``, which needs ``vmx``): a gate turned on
    is required in turn, until QEMU keeps every required feature or nothing more can be turned on.
    """
    required = dict(named)
    enabled: dict[str, list[str]] = {}
    for _ in range(4):
        off = _gated_off(props, expanded, required, catalog)
        if not off:
            break
        added = False
        for name in off:
            gate = gate_of(catalog.feature(name)) if catalog.has_feature(name) else None
            gate_name = catalog.feature(gate).qemu_name if gate and catalog.has_feature(gate) else None
            if gate_name is None or (props.get(gate_name) is False and gate_name not in enabled):
                why = (f"it needs '{gate_name}', which the definition disables" if gate_name
                       else "QEMU gives no reason")
                hint = f"enable '{gate_name}'" if gate_name else "enable what it depends on"
                raise InputError(
                    f"the guest CPU requires feature '{required[name]}', but QEMU turns it off on {model} ({why}); "
                    f"{hint} or drop the requirement"
                )
            if props.get(gate_name) is not True:
                props[gate_name] = True
                required[gate_name] = gate_name
                added = True
            names = enabled.setdefault(gate_name, [])
            if required[name] not in names:
                names.append(required[name])
        if not added:
            break
        expanded = await session.expand(model, props)
    still = _gated_off(props, expanded, required, catalog)
    if still:
        raise InputError(
            f"the guest CPU requires {', '.join(repr(required[n]) for n in still)}, but QEMU turns "
            f"{'it' if len(still) == 1 else 'them'} off on {model}"
            + (f" even with {', '.join(repr(g) for g in enabled)} on" if enabled else "")
            + "; drop the requirement or choose another model"
        )
    for gate_name, names in enabled.items():
        warnings.append(
            f"{', '.join(names)} exist{'s' if len(names) == 1 else ''} only with {gate_name}, which {model} has off: "
            f"{gate_name} is enabled with {'it' if len(names) == 1 else 'them'}"
        )
    return expanded


def _check_vendor_given(props: dict[str, object], expanded: Expanded, cpu: CpuDefinition) -> None:
    """The vendor the definition names is what QEMU reports, or the definition is refused."""
    wanted = props.get("vendor")
    got = expanded.static.get("vendor")
    if isinstance(wanted, str) and got != wanted:
        raise InputError(
            f"the guest CPU names vendor {wanted} but QEMU's {expanded.model} reports {got}; "
            "drop <vendor> or choose a model of that vendor"
        )


def _sets_gated_msr(abi: Abi) -> bool:
    """Whether QEMU will write an MSR some KVMs refuse for this pin (its gate feature is on)."""
    return any(abi.features.get(gate) for _, gate in MSR_GATES.values())


async def _trial_start(abi: Abi, target: Target, timeout: float) -> QemuStartError | None:
    """Start the pinned CPU paused once; QEMU's start-up failure (None: it started)."""
    args = guest_args(abi, known_features(target.caps), caps=target.caps)
    try:
        async with QemuProcess(target.binary, args, timeout=timeout, name="trial"):
            return None
    except QemuStartError as exc:
        return exc


async def _realized_identity(abi: Abi, target: Target, timeout: float) -> Abi:
    """``abi`` with the identity (vendor, family/model/stepping, level, xlevel, model-id) of a started vCPU."""
    from guestcpu.lifecycle.live import IDENTITY, read_live

    known = known_features(target.caps)
    async with QemuProcess(target.binary, guest_args(abi, known, caps=target.caps), timeout=timeout,
                           name="identity") as qemu:
        live = await read_live(qemu, abi, known)
    return replace(abi, **{field: live.identity[prop] for field, prop in IDENTITY.items()})


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
