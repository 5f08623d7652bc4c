"""Can a destination give a guest exactly its pinned CPU? (pure)

The guest's *pinned* CPU is compared with the destination QEMU's capabilities under
the pin's accelerator, never the source host's physical CPU (comparing hosts is a
known source of false refusals).  A destination is refused, naming everything that
decides it, when:

* it has no usable accelerator of the pin's kind, lacks the machine type, or (custom
  pins) lacks the ``-cpu`` model;
* a feature the pin requires is unknown to its QEMU or not something it can give;
* its QEMU lacks a property the pin names (a disabled feature a newer QEMU added,
  ``amd-psfd``; a machine property): that QEMU refuses ``-cpu``/``qom-get`` with
  "Property ... not found", so the guest could not even be started there;
* (host-passthrough, maximum) its host CPU as QEMU reports it is not identical to the
  one the guest was started on: such guests only move to an identical host;
* (migration) the pin requires a feature that blocks migration (``invtsc``);
* (``match='strict'``, KVM) the destination has features the guest does not.

Under TCG the comparison is with the destination QEMU's TCG capabilities: the host
CPU plays no part, so a TCG guest may go to any host whose QEMU can give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict

from guestcpu.catalog.catalog import normalize_feature_name
from guestcpu.formats.qemu_json import NON_FEATURE_PROPS
from guestcpu.lifecycle.abi import REQUESTED_KEY, topology_given
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import known_features, non_migratable_features, supported_features

PURPOSES = ("migrate", "restore", "start")
_IDENTITY_PROPS = ("vendor", "family", "model", "stepping", "model-id")


class VerdictJson(TypedDict):
    """``Verdict.to_json()``: the body of ``migrate-check --json`` (and of each refusal's verdict)."""

    purpose: str
    destination: str
    fingerprint: str
    ok: bool
    missing_features: list[str]
    missing_model: str | None
    missing_machine: str | None
    missing_properties: list[str]
    non_migratable_features: list[str]
    host_differences: list[str]
    extra_features: list[str]
    blockers: list[str]
    unnamed_features: list[str]
    reasons: list[str]
    notes: list[str]


@dataclass(frozen=True)
class Verdict:
    purpose: str
    destination: str
    fingerprint: str
    #: required features the destination cannot give (unknown to its QEMU included)
    missing: tuple[str, ...] = ()
    missing_model: str | None = None
    missing_machine: str | None = None
    non_migratable: tuple[str, ...] = ()
    #: properties the pin names (features it disables, machine properties) that the destination QEMU lacks
    missing_properties: tuple[str, ...] = ()
    #: host-passthrough/maximum: how the destination's host CPU differs from the pinned one
    host_differences: tuple[str, ...] = ()
    #: match='strict': features the destination has that the guest does not
    extra: tuple[str, ...] = ()
    #: other reasons to refuse (no such accelerator, another architecture)
    blockers: tuple[str, ...] = ()
    #: features the destination's QEMU turns on in the pin's model that the pin does not name
    #: (it knows them, the pinning QEMU did not): the guest's CPU would change
    unnamed: tuple[str, ...] = ()

    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.missing_model or self.missing_machine or self.non_migratable
            or self.missing_properties or self.host_differences or self.extra or self.blockers or self.unnamed
        )

    @property
    def reasons(self) -> list[str]:
        reasons = list(self.blockers)
        if self.missing_machine:
            reasons.append(f"its QEMU has no machine type {self.missing_machine}")
        if self.missing_model:
            reasons.append(f"its QEMU has no CPU model {self.missing_model}")
        if self.missing:
            reasons.append(f"missing features: {', '.join(self.missing)}")
        if self.missing_properties:
            reasons.append(
                f"its QEMU lacks CPU properties the pin names (it would refuse the guest): "
                f"{', '.join(self.missing_properties)}"
            )
        if self.host_differences:
            reasons.append(
                "the guest has the source host's CPU as it is (host-passthrough/maximum) and can only move to an "
                f"identical host; this one differs: {'; '.join(self.host_differences)}"
            )
        if self.non_migratable:
            reasons.append(f"features that block live migration: {', '.join(self.non_migratable)}")
        if self.extra:
            reasons.append(f"match='strict' and the destination has features the guest lacks: {', '.join(self.extra)}")
        if self.unnamed:
            reasons.append(f"its QEMU's definition of the model also turns on {', '.join(self.unnamed)}, which the "
                           "pin does not name (unknown to the QEMU it was pinned with): the guest's CPU would change")
        return reasons

    def summary(self) -> str:
        verb = {"migrate": "migration", "restore": "restore", "start": "start"}[self.purpose]
        if self.ok:
            return f"{verb} to {self.destination}: OK, it can give exactly the pinned CPU ({self.fingerprint})"
        return f"{verb} to {self.destination} refused before anything was sent: " + "; ".join(self.reasons)

    def to_json(self) -> VerdictJson:
        return {
            "purpose": self.purpose,
            "destination": self.destination,
            "fingerprint": self.fingerprint,
            "ok": self.ok,
            "missing_features": list(self.missing),
            "missing_model": self.missing_model,
            "missing_machine": self.missing_machine,
            "missing_properties": list(self.missing_properties),
            "non_migratable_features": list(self.non_migratable),
            "host_differences": list(self.host_differences),
            "extra_features": list(self.extra),
            "blockers": list(self.blockers),
            "unnamed_features": list(self.unnamed),
            "reasons": self.reasons,
            "notes": list(self.notes),
        }


def host_differences(pinned: Mapping[str, Any] | None, caps: QemuCaps) -> list[str]:
    """How the destination's host/max expansion differs from the one the guest was pinned with."""
    if pinned is None:
        return ["the pin records no host CPU to compare with"]
    current = caps.host_static
    if current is None:
        return ["the destination QEMU reports no host CPU"]
    old_props: Mapping[str, Any] = pinned.get("props", {})
    new_props = current.props
    diffs = [
        f"{key} {old_props.get(key)!r} -> {new_props.get(key)!r}"
        for key in _IDENTITY_PROPS
        if old_props.get(key) != new_props.get(key)
    ]
    # QEMU spells some features several ways (sse4.1, sse4_1); older builds report the aliases too.
    old_on = {normalize_feature_name(k) for k, v in old_props.items() if v is True}
    new_on = {normalize_feature_name(k) for k in current.enabled}
    if old_on - new_on:
        diffs.append(f"lacks {', '.join(sorted(old_on - new_on))}")
    if new_on - old_on:
        diffs.append(f"also has {', '.join(sorted(new_on - old_on))}")
    return diffs


def absent_properties(pin: Pin, caps: QemuCaps, known: frozenset[str]) -> set[str]:
    """Properties the pin names that the destination's CPU model lacks.

    Capabilities that record the CPU types' property lists judge every name; older
    ones know only the feature names, so the pin's machine properties go unjudged.
    """
    abi = pin.abi
    requested = abi.props.get(REQUESTED_KEY)
    # host-passthrough/maximum: the user's own feature requests go on -cpu too
    features = [*abi.features, *(requested if isinstance(requested, dict) else ())]
    absent: set[str] = set()
    for name in (*features, *(key for key in abi.props if key != REQUESTED_KEY)):
        found = caps.has_property(abi.model, name)
        # without recorded property lists only the feature names QEMU reported can be judged
        if found is False or (found is None and name in features and name not in known):
            absent.add(name)
    return absent


def check_destination(
    pin: Pin,
    caps: QemuCaps | None,
    *,
    purpose: str,
    destination: str,
    unavailable: str | None = None,
) -> Verdict:
    """The verdict for running ``pin`` at a destination with ``caps`` (None: no such accelerator there)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    abi = pin.abi
    if caps is None:
        why = f": {unavailable}" if unavailable else ""
        blocker = f"the destination has no usable {abi.accel.upper()}{why}"
        return Verdict(purpose, destination, pin.fingerprint, blockers=(blocker,))
    notes: list[str] = []
    if purpose == "start" and pin.policy.recompute:
        # A fresh start recomputes a host-relative CPU from what this destination has.
        note = f"{pin.policy.mode} is recomputed from this host's capabilities at a fresh start"
        return Verdict(purpose, destination, pin.fingerprint, notes=(note,))
    blockers: list[str] = []
    if caps.arch != abi.arch:
        blockers.append(f"its QEMU emulates {caps.arch}, the guest is {abi.arch}")
    if caps.accel != abi.accel:
        blockers.append(f"the capabilities are for {caps.accel}, the guest runs under {abi.accel}")
    missing_machine = abi.machine if caps.machine(abi.machine) is None else None
    passthrough = abi.mode != "custom"
    missing_model = None if passthrough or caps.has_model(abi.model) else abi.model
    known = known_features(caps)
    supported = supported_features(caps) | topology_given(abi.topology, abi.vendor)
    required = set(abi.required)
    missing = sorted((required - known) | (required & known - supported))
    missing_properties = sorted(absent_properties(pin, caps, known) - required)
    differences = host_differences(pin.host, caps) if passthrough else []
    non_migratable = sorted(required & non_migratable_features(caps)) if purpose == "migrate" else []
    extra: list[str] = []
    if pin.policy.match == "strict" and abi.accel == "kvm":
        extra = sorted(set(abi.disabled) & supported)
    if abi.accel == "tcg":
        notes.append("TCG: checked against the destination QEMU's TCG capabilities; its host CPU plays no part")
    if caps.qemu_version != pin.made_with.get("qemu_version"):
        notes.append(f"pinned with QEMU {pin.made_with.get('qemu_version')}, destination has {caps.qemu_version}")
    return Verdict(
        purpose,
        destination,
        pin.fingerprint,
        missing=tuple(missing),
        missing_model=missing_model,
        missing_machine=missing_machine,
        non_migratable=tuple(non_migratable),
        missing_properties=tuple(missing_properties),
        host_differences=tuple(differences),
        extra=tuple(extra),
        blockers=tuple(blockers),
        unnamed=tuple([] if passthrough else unnamed_features(pin, caps)),
        notes=tuple(notes),
    )


# -- a pin made on one QEMU release, judged on another -------------------------------------
def unnamed_features(pin: Pin, caps: QemuCaps) -> list[str]:
    """Features the destination's QEMU enables in the pin's model that the pin does not mention."""
    model = caps.model(pin.abi.model)
    if model is None or model.expansion is None:
        return []
    named = {normalize_feature_name(k) for k in (*pin.abi.features, *pin.abi.props)}
    return sorted({k for k in model.expansion.enabled
                   if k not in NON_FEATURE_PROPS and normalize_feature_name(k) not in named})
