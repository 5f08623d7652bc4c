"""``diff``: what changed between two pins, or between two captures of a host (pure).

* two pins: every ABI difference (model, version, machine type, identity, each
  feature that flipped, appeared or vanished, machine-dependent properties);
* two captures (before/after a QEMU, microcode or kernel update), per accelerator:
  models that became usable or unusable (with what now blocks them), models and
  machine types QEMU gained or lost, features that appeared or vanished, the host CPU
  identity; and for a set of pins, which guests would no longer start, or no longer
  be accepted by an incoming migration or restore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guestcpu.lifecycle.capture import HostCapture
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import supported_features

_ABI_FIELDS = (
    "arch", "accel", "machine", "mode", "model", "version", "vendor", "family", "model_number", "stepping",
    "level", "xlevel", "model_id",
)


def diff_pins(old: Pin, new: Pin) -> dict[str, Any]:
    a, b = old.abi, new.abi
    fields = {
        name: [getattr(a, name), getattr(b, name)] for name in _ABI_FIELDS if getattr(a, name) != getattr(b, name)
    }
    common = set(a.features) & set(b.features)
    props = {
        key: [a.props.get(key), b.props.get(key)]
        for key in sorted(set(a.props) | set(b.props))
        if a.props.get(key) != b.props.get(key)
    }
    return {
        "kind": "pins",
        "same_abi": old.fingerprint == new.fingerprint,
        "fingerprints": [old.fingerprint, new.fingerprint],
        "fields": fields,
        "features": {
            "now_required": sorted(n for n in common if b.features[n] and not a.features[n]),
            "now_disabled": sorted(n for n in common if a.features[n] and not b.features[n]),
            "only_in_old": {n: _policy(a.features[n]) for n in sorted(set(a.features) - common)},
            "only_in_new": {n: _policy(b.features[n]) for n in sorted(set(b.features) - common)},
        },
        "props": props,
        "made_with": [dict(old.made_with), dict(new.made_with)] if old.made_with != new.made_with else None,
    }


def _policy(on: bool) -> str:
    return "require" if on else "disable"


def diff_caps(old: QemuCaps | None, new: QemuCaps | None) -> dict[str, Any]:
    """What changed for one accelerator."""
    if old is None or new is None:
        return {"available": [old is not None, new is not None]}
    old_models = {m.name: m for m in old.models}
    new_models = {m.name: m for m in new.models}
    both = sorted(set(old_models) & set(new_models))
    became_unusable = {
        n: list(new_models[n].blockers) for n in both if old_models[n].usable and not new_models[n].usable
    }
    became_usable = sorted(n for n in both if not old_models[n].usable and new_models[n].usable)
    blockers_changed = {
        n: {"old": list(old_models[n].blockers), "new": list(new_models[n].blockers)}
        for n in both
        if not old_models[n].usable and not new_models[n].usable
        and set(old_models[n].blockers) != set(new_models[n].blockers)
    }
    old_supported, new_supported = supported_features(old), supported_features(new)
    old_host = old.host_static.props if old.host_static else {}
    new_host = new.host_static.props if new.host_static else {}
    identity = {
        key: [old_host.get(key), new_host.get(key)]
        for key in ("vendor", "family", "model", "stepping", "model-id")
        if old_host.get(key) != new_host.get(key)
    }
    old_machines = {m.name for m in old.machines}
    new_machines = {m.name for m in new.machines}
    return {
        "available": [True, True],
        "qemu_version": [old.qemu_version, new.qemu_version] if old.qemu_version != new.qemu_version else None,
        "models_became_usable": became_usable,
        "models_became_unusable": became_unusable,
        "blockers_changed": blockers_changed,
        "models_added": sorted(set(new_models) - set(old_models)),
        "models_removed": sorted(set(old_models) - set(new_models)),
        "features_appeared": sorted(new_supported - old_supported),
        "features_vanished": sorted(old_supported - new_supported),
        "host_cpu": identity,
        "machines_added": sorted(new_machines - old_machines),
        "machines_removed": sorted(old_machines - new_machines),
    }


@dataclass(frozen=True)
class PinImpact:
    name: str
    fingerprint: str
    #: purpose -> (ok before, ok after, reasons after)
    verdicts: dict[str, tuple[bool, bool, list[str]]]

    @property
    def broken(self) -> list[str]:
        return [p for p, (before, after, _) in self.verdicts.items() if before and not after]

    def to_json(self) -> dict[str, Any]:
        return {
            "guest": self.name,
            "fingerprint": self.fingerprint,
            "no_longer": self.broken,
            "verdicts": {
                p: {"before": before, "after": after, "reasons_after": reasons}
                for p, (before, after, reasons) in self.verdicts.items()
            },
        }


def pin_impact(name: str, pin: Pin, old: HostCapture, new: HostCapture) -> PinImpact:
    """Whether the guest could start here, or be received (migration, restore), before and after."""
    verdicts: dict[str, tuple[bool, bool, list[str]]] = {}
    old_caps, old_why = old.caps(pin.abi.accel)
    new_caps, new_why = new.caps(pin.abi.accel)
    for purpose in ("start", "migrate", "restore"):
        before = check_destination(pin, old_caps, purpose=purpose, destination="before", unavailable=old_why)
        after = check_destination(pin, new_caps, purpose=purpose, destination="after", unavailable=new_why)
        verdicts[purpose] = (before.ok, after.ok, after.reasons)
    return PinImpact(name, pin.fingerprint, verdicts)


def diff_captures(old: HostCapture, new: HostCapture, pins: Sequence[tuple[str, Pin]] = ()) -> dict[str, Any]:
    accels = sorted(set(old.accels) | set(new.accels) | set(old.unavailable) | set(new.unavailable))
    impacts = [pin_impact(name, pin, old, new) for name, pin in pins]
    return {
        "kind": "captures",
        "hosts": [old.hostname, new.hostname],
        "captured_at": [old.captured_at, new.captured_at],
        "kernel": [old.kernel, new.kernel] if old.kernel != new.kernel else None,
        "accels": {accel: diff_caps(old.accels.get(accel), new.accels.get(accel)) for accel in accels},
        "guests": [i.to_json() for i in impacts],
        "guests_broken": [i.name for i in impacts if i.broken],
    }
