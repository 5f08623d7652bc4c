"""From a loose guest ``<cpu>`` to exactly what to ask QEMU for (pure).

The answer is a ``-cpu`` model (versioned as ``versions`` decides) and the properties
to set on it.  QEMU then expands that on the guest's machine type and the expansion is
the pin (``abi.build_abi``); nothing here guesses what QEMU will make of it.

Modes, as libvirt defines them:

* ``custom``: the model plus the definition's feature policies.  ``require``/``force``
  turn a feature on and ``disable``/``forbid`` off; ``optional`` follows what this
  accelerator can give; ``forbid`` fails when a KVM host has the feature.
  ``match='minimum'`` means this host's CPU plus the listed features (like
  host-model); ``strict`` pins like ``exact`` and is enforced by the destination checks.
  ``fallback='allow'`` swaps a model QEMU lacks for the closest one it has.
* ``host-model``: this accelerator's ``host`` (KVM) or ``max`` (TCG) expansion, as the
  nearest named model with every feature set to match; recomputed at each fresh start.
* ``host-passthrough``: ``-cpu host`` (TCG: ``max``); ``maximum``: ``-cpu max``.  Both
  depend on the host, so a guest with them can only move to an identical host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.model.cpu import CpuDefinition, Fallback, Match, Mode, Policy
from guestcpu.model.names import version_of
from guestcpu.qemu.caps import MachineCaps, QemuCaps
from guestcpu.qemu.hypervisor import host_model
from guestcpu.qemu.request import ModelChoice, fall_back, feature_decisions, requested_vendor, resolve_model


@dataclass(frozen=True)
class CpuRequest:
    #: how the ABI is handed to QEMU: custom, host-passthrough or maximum
    abi_mode: str
    #: what the definition asked for: custom, host-model, host-passthrough or maximum
    definition_mode: str
    match: str | None
    requested: str | None
    choice: ModelChoice
    #: QEMU properties to set on the model (feature -> bool, ``vendor`` -> str)
    props: dict[str, Any] = field(default_factory=dict)
    #: host-relative: a fresh start recomputes it
    recompute: bool = False
    warnings: tuple[str, ...] = ()


def default_cpu(machine: MachineCaps) -> CpuDefinition:
    """The machine type's default CPU as an explicit definition (libvirt does the same)."""
    name = machine.default_cpu
    if not name:
        raise InputError(f"machine type {machine.name} has no default CPU; give the guest a <cpu> with a <model>")
    if name == "host":
        return CpuDefinition(mode=Mode.HOST_PASSTHROUGH)
    return CpuDefinition(mode=Mode.CUSTOM, match=Match.EXACT, model=name, fallback=Fallback.FORBID)


def plan_request(
    cpu: CpuDefinition,
    caps: QemuCaps,
    catalog: Catalog,
    machine: MachineCaps,
    *,
    existing: bool = False,
    machine_aliases: Mapping[str, str | None] | None = None,
) -> CpuRequest:
    mode = cpu.mode or Mode.CUSTOM
    kvm = caps.accel == "kvm"
    if mode is Mode.HOST_PASSTHROUGH or mode is Mode.MAXIMUM:
        name = "host" if (mode is Mode.HOST_PASSTHROUGH and kvm) else "max"
        warnings = []
        if mode is Mode.HOST_PASSTHROUGH and not kvm:
            warnings.append("under TCG host-passthrough means TCG's 'max' CPU")
        warnings.append(
            f"{mode.value} gives the guest this host's CPU as it is: it can only move to an identical host "
            "(same CPU, microcode, kernel and QEMU)"
        )
        props, more = feature_props(cpu, caps, catalog)
        return CpuRequest(
            abi_mode=mode.value,
            definition_mode=mode.value,
            match=None,
            requested=name,
            choice=ModelChoice(name, None, "passthrough" if mode is Mode.HOST_PASSTHROUGH else "maximum"),
            props=props,
            recompute=True,
            warnings=(*warnings, *more),
        )
    if mode is Mode.HOST_MODEL or cpu.match is Match.MINIMUM:
        return _host_model(cpu, caps, catalog, mode)
    return _custom(cpu, caps, catalog, machine, existing, machine_aliases)


def _custom(
    cpu: CpuDefinition,
    caps: QemuCaps,
    catalog: Catalog,
    machine: MachineCaps,
    existing: bool,
    machine_aliases: Mapping[str, str | None] | None,
) -> CpuRequest:
    if cpu.model is None:
        raise InputError("a custom CPU needs a <model>; name one such as 'Skylake-Client' or use mode='host-model'")
    requested = cpu.model
    warnings: list[str] = []
    if not caps.has_model(cpu.model):
        cpu, note = fall_back(cpu, caps, catalog)
        warnings.append(note)
    assert cpu.model is not None
    choice = resolve_model(
        cpu.model, caps, catalog, existing=existing, machine=machine, machine_aliases=machine_aliases
    )
    props, more = feature_props(cpu, caps, catalog)
    _check_vendor(cpu, caps, catalog)
    vendor = requested_vendor(cpu, catalog)
    if vendor is not None:
        props["vendor"] = vendor
    return CpuRequest(
        abi_mode="custom",
        definition_mode="custom",
        match=(cpu.match or Match.EXACT).value,
        requested=requested,
        choice=choice,
        props=props,
        warnings=(*warnings, *choice.notes, *more),
    )


def _check_vendor(cpu: CpuDefinition, caps: QemuCaps, catalog: Catalog) -> None:
    """``<vendor>`` must be a catalog vendor, and requires a host of that vendor (KVM only: TCG does not
    look at the host)."""
    if cpu.vendor is None:
        return
    wanted = catalog.vendor(cpu.vendor, "the guest CPU's <vendor>")
    if caps.accel != "kvm" or caps.host_static is None:
        return
    host_string = caps.host_static.get("vendor")
    if host_string != wanted.string:
        raise GuestCpuError(
            f"the guest CPU requires vendor {wanted.name} ({wanted.string}) but this host's is {host_string}; "
            "drop <vendor> or set <model vendor_id=...> to present another vendor to the guest"
        )


def feature_props(cpu: CpuDefinition, caps: QemuCaps, catalog: Catalog) -> tuple[dict[str, Any], list[str]]:
    """The definition's feature policies (``qemu.request``) as QEMU properties (feature -> on/off)."""
    props: dict[str, Any] = {}
    warnings: list[str] = []
    for decision in feature_decisions(cpu, caps, catalog).decisions:
        policy = decision.policy
        if not decision.known:
            if policy in (Policy.REQUIRE, Policy.FORCE):
                raise InputError(
                    f"the guest CPU requires feature '{decision.written}', which QEMU {caps.qemu_version} "
                    "does not know"
                )
            warnings.append(f"feature '{decision.written}' ({policy.value}) is unknown to QEMU {caps.qemu_version}; "
                            "it is off anyway")
            continue
        if policy is Policy.FORBID and caps.accel == "kvm" and decision.offered:
            raise GuestCpuError(f"the guest CPU forbids feature '{decision.written}' but this host provides it")
        props[decision.qemu_name] = decision.on
    return props, warnings


def _host_model(cpu: CpuDefinition, caps: QemuCaps, catalog: Catalog, mode: Mode) -> CpuRequest:
    host = caps.host_static
    if host is None:
        raise InputError(f"QEMU {caps.qemu_version} ({caps.accel}) reported no host CPU; host-model is not possible")
    enabled = set(host.enabled)
    vendor_string = host.get("vendor")
    # libvirt's guest decode, restricted to the models this QEMU has; the pin takes the
    # version that name stands for (a fixed alias), so it does not depend on the machine type.
    decoded = host_model(caps, catalog).model
    model_name = decoded.canonical if caps.has_model(decoded.canonical) else decoded.name
    props: dict[str, Any] = {name: name in enabled for name in sorted(caps.known_props)}
    if isinstance(vendor_string, str):
        props["vendor"] = vendor_string
    warnings = []
    if caps.accel == "tcg":
        warnings.append("under TCG host-model means TCG's 'max' CPU, pinned as a named model")
    if mode is Mode.CUSTOM:
        warnings.append("match='minimum': this host's CPU plus the listed features, recomputed at each fresh start")
    extra, more = feature_props(cpu, caps, catalog)
    props.update(extra)
    return CpuRequest(
        abi_mode="custom",
        definition_mode="host-model" if mode is Mode.HOST_MODEL else "custom",
        match=cpu.match.value if cpu.match else None,
        requested=cpu.model if mode is Mode.CUSTOM else None,
        choice=ModelChoice(model_name, version_of(model_name), "host-model"),
        props=props,
        recompute=True,
        warnings=(*warnings, *more),
    )
