"""What a guest definition requests of one QEMU (pure): computed once, used by every caller.

``compare``/``baseline --hypervisor`` (``qemu.hypervisor.effective_cpu``) and the pinning
path of ``define``/``run``/``start`` (``lifecycle.request``) both ask this module:

* ``resolve_model``: which versioned model an unversioned name means;
* ``fall_back``: the closest model QEMU has when it lacks the one named (``fallback='allow'``);
* ``requested_vendor``: the CPUID vendor string the definition names (``vendor_id``, else ``<vendor>``);
* ``feature_requests``: each ``<feature>``'s policy as on/off on this QEMU and accelerator.

Version rules:

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.update import translate
from guestcpu.errors import InputError, suggest
from guestcpu.model.cpu import CpuDefinition, Fallback, Policy
from guestcpu.model.features import Feature
from guestcpu.model.names import base_of, version_of
from guestcpu.qemu.caps import RESOLVE_LATEST, RESOLVE_LEGACY, RESOLVE_V1, MachineCaps, QemuCaps
from guestcpu.qemu.hypervisor import SPECIAL_MODELS, offered_bits


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


# -- model and version -------------------------------------------------------------
def latest_common(name: str, caps: QemuCaps, catalog: Catalog) -> tuple[str, tuple[str, ...]]:
    """The newest ``name-vN`` that both the catalog and QEMU have: what a new definition of ``name`` gets."""
    known = catalog.find_model(name)
    if known is not None:
        common = [m.name for m in catalog.versions(known.family) if caps.has_model(m.name)]
        if common:
            return common[-1], ()
    newest = caps.latest_versions().get(name)
    if newest is None:
        return name, (f"QEMU {caps.qemu_version} has no versions of {name}; using it as it is",)
    return newest, (f"the catalog has no versions of {name}; using QEMU's latest, {newest}",)


def machine_choice(name: str, caps: QemuCaps, rule: str) -> ModelChoice:
    """What an unversioned ``name`` is on a machine type that resolves by ``rule``."""
    entry = caps.model(name)
    alias_of = entry.alias_of if entry is not None else None
    if rule == RESOLVE_LEGACY:
        return ModelChoice(name, RESOLVE_LEGACY, RESOLVE_LEGACY)
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
    existing: bool = False,
    machine: MachineCaps | None = None,
    machine_aliases: Mapping[str, str | None] | None = None,
) -> ModelChoice:
    """The versioned ``-cpu`` model for ``name`` in a new or existing definition.

    ``machine_aliases`` is QEMU's own ``alias-of`` per model in a process started with
    the guest's machine type (None for no alias, i.e. legacy), when it was measured.
    Where the rule and QEMU disagree, QEMU wins and a note says so.  An existing guest
    needs its ``machine``.
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
    if machine is None:
        raise InputError(f"an existing guest's {name} depends on its machine type; name one")
    choice = machine_choice(name, caps, machine.resolves)
    if machine_aliases is None or name not in machine_aliases:
        return choice
    alias = machine_aliases[name]
    if alias is None:
        measured = ModelChoice(name, RESOLVE_LEGACY, RESOLVE_LEGACY)
    else:
        measured = ModelChoice(alias, version_of(alias), choice.rule)
    if measured.qemu_model == choice.qemu_model and measured.version == choice.version:
        return choice
    note = (
        f"QEMU runs {name} as {measured.qemu_model} ({measured.version}) on {machine.name}, "
        f"not {choice.qemu_model} as the {machine.resolves} rule says; QEMU's answer is pinned"
    )
    return ModelChoice(measured.qemu_model, measured.version, "measured", (note,))


def fall_back(cpu: CpuDefinition, caps: QemuCaps, catalog: Catalog) -> tuple[CpuDefinition, str]:
    """``cpu`` with the closest model this QEMU has in place of one it lacks (libvirt's fallback), and a note.

    Refused (``ModelNotInQemuError``) under ``fallback='forbid'`` or for a model the catalog does not know.
    """
    name = cpu.model or ""
    if (cpu.fallback or Fallback.ALLOW) is Fallback.FORBID or not catalog.has_model(name):
        raise ModelNotInQemuError(name, caps.qemu_version, caps.model_names())
    offered = {m.name: m.blockers for m in caps.models if catalog.has_model(m.name)}
    chosen = translate(cpu, catalog, offered)
    return chosen, f"QEMU {caps.qemu_version} has no {name}; fallback='allow' chose {chosen.model}"


# -- vendor -----------------------------------------------------------------------------
def requested_vendor(cpu: CpuDefinition, catalog: Catalog) -> str | None:
    """The CPUID vendor string the definition names: ``vendor_id``, else ``<vendor>``'s (None: not named).

    ``<vendor>`` is what the guest sees, under TCG as well as KVM (QEMU would otherwise
    give the model's own vendor, or under KVM the host's).
    """
    if cpu.vendor_id:
        return cpu.vendor_id
    if cpu.vendor:
        return catalog.vendor(cpu.vendor, "guest CPU").string
    return None


# -- features ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureDecision:
    """One ``<feature>`` of the definition, decided for this QEMU and accelerator."""

    #: the name as the definition wrote it
    written: str
    feature: Feature
    policy: Policy
    #: the guest gets it (require/force; optional and offered) or not (disable/forbid; optional, not offered)
    on: bool
    #: QEMU has a property for it (True when this QEMU's document cannot say)
    known: bool
    #: this QEMU can give it under its accelerator
    offered: bool

    @property
    def qemu_name(self) -> str:
        return self.feature.qemu_name

    @property
    def bit(self) -> int:
        return 1 << self.feature.index


@dataclass(frozen=True)
class FeatureDecisions:
    decisions: tuple[FeatureDecision, ...]

    @property
    def required_bits(self) -> int:
        """Catalog bits of the features the guest gets (a feature both asked on and off stays on)."""
        return sum_bits(r for r in self.decisions if r.on)

    @property
    def disabled_bits(self) -> int:
        return sum_bits(r for r in self.decisions if not r.on) & ~self.required_bits


def sum_bits(requests: Iterable[FeatureDecision]) -> int:
    bits = 0
    for request in requests:
        bits |= request.bit
    return bits


def feature_decisions(cpu: CpuDefinition, caps: QemuCaps, catalog: Catalog) -> FeatureDecisions:
    """Each ``<feature>``'s policy on this QEMU: ``require``/``force`` on, ``disable``/``forbid`` off,
    ``optional`` on where this accelerator offers it.  Refusals (``forbid`` of an offered feature
    on KVM, ``require`` of one QEMU does not know) are the caller's to make: each says it its way."""
    offer = offered_bits(caps, catalog)
    known = caps.known_props
    decided: list[FeatureDecision] = []
    for request in cpu.features:
        feature = catalog.feature(request.name, "guest CPU")
        policy = request.policy or Policy.REQUIRE
        offered = bool(offer >> feature.index & 1)
        on = offered if policy is Policy.OPTIONAL else policy in (Policy.REQUIRE, Policy.FORCE)
        decided.append(FeatureDecision(request.name, feature, policy, on, not known or feature.qemu_name in known,
                                      offered))
    return FeatureDecisions(tuple(decided))
