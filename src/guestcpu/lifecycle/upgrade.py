"""``upgrade-check``: what an upgrade of this host does to its pinned guests, before it (pure).

The upgrade is a new QEMU (its capabilities probed on this host), or a new microcode or
kernel (a capture of the host made after it).  For every pinned guest, four questions:

* could it start here before the upgrade (if not, the upgrade does not break it);
* does it still start after it;
* can a guest still running on the old side (another host of the fleet, or this one
  before the upgrade) live-migrate to the new side, and
* can a guest started on the new side migrate back to a host still on the old side.

Each answer is :func:`guestcpu.lifecycle.compat.check_destination` on the side that
receives the guest: the pin, never the source CPU, decides, and every feature,
property and machine type that stops the guest is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guestcpu.lifecycle.capture import HostCapture
from guestcpu.lifecycle.compat import Verdict, check_destination
from guestcpu.lifecycle.pin import Pin

#: The questions, in the order they are shown: (key, purpose, side that receives the guest).
QUESTIONS = (
    ("start", "start", "new"),
    ("migrate_old_to_new", "migrate", "new"),
    ("migrate_new_to_old", "migrate", "old"),
)


@dataclass(frozen=True)
class GuestUpgrade:
    """One pinned guest across the upgrade."""

    name: str
    fingerprint: str
    accel: str
    machine: str
    model: str
    #: the guest starts on the old side (else the upgrade cannot break it)
    before: Verdict
    #: question key -> verdict on the receiving side
    after: dict[str, Verdict]

    @property
    def broken(self) -> list[str]:
        """The questions the upgrade turns from yes to no."""
        if not self.before.ok:
            return []
        return [key for key, verdict in self.after.items() if not verdict.ok]

    @property
    def status(self) -> str:
        if not self.before.ok:
            return "already-broken"
        return "breaks" if self.broken else "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "guest": self.name,
            "fingerprint": self.fingerprint,
            "accel": self.accel,
            "machine": self.machine,
            "model": self.model,
            "status": self.status,
            "breaks": self.broken,
            "starts_before": self.before.ok,
            "reasons_before": self.before.reasons,
            **{key: _answer(verdict) for key, verdict in self.after.items()},
        }


def _answer(verdict: Verdict) -> dict[str, Any]:
    return {"ok": verdict.ok, "reasons": verdict.reasons, "notes": list(verdict.notes)}


@dataclass(frozen=True)
class UpgradeReport:
    old: str
    new: str
    #: what changes: "qemu", "microcode", "kernel" (several when a capture differs in several)
    changes: tuple[str, ...]
    guests: tuple[GuestUpgrade, ...]

    @property
    def broken(self) -> list[str]:
        return [g.name for g in self.guests if g.broken]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "upgrade-check",
            "old": self.old,
            "new": self.new,
            "changes": list(self.changes),
            "guests": [g.to_json() for g in self.guests],
            "guests_broken": self.broken,
        }


def describe(capture: HostCapture) -> str:
    parts = [f"QEMU {capture.qemu_version}", f"kernel {capture.kernel}"]
    if capture.microcode:
        parts.append(f"microcode {capture.microcode}")
    return ", ".join(parts)


def changes_between(old: HostCapture, new: HostCapture) -> tuple[str, ...]:
    found = []
    if old.qemu_version != new.qemu_version or old.binary != new.binary:
        found.append("qemu")
    if old.microcode != new.microcode:
        found.append("microcode")
    if old.kernel != new.kernel:
        found.append("kernel")
    return tuple(found)


def guest_upgrade(name: str, pin: Pin, old: HostCapture, new: HostCapture) -> GuestUpgrade:
    sides = {"old": old, "new": new}
    old_caps, old_why = old.caps(pin.abi.accel)
    before = check_destination(pin, old_caps, purpose="start", destination="the old side", unavailable=old_why)
    after: dict[str, Verdict] = {}
    for key, purpose, side in QUESTIONS:
        caps, why = sides[side].caps(pin.abi.accel)
        after[key] = check_destination(pin, caps, purpose=purpose, destination=f"the {side} side", unavailable=why)
    return GuestUpgrade(name, pin.fingerprint, pin.abi.accel, pin.abi.machine, pin.abi.model, before, after)


def upgrade_check(pins: Sequence[tuple[str, Pin]], old: HostCapture, new: HostCapture) -> UpgradeReport:
    """Every pinned guest across the change from ``old`` to ``new`` (captures of the same host)."""
    guests = tuple(guest_upgrade(name, pin, old, new) for name, pin in pins)
    return UpgradeReport(describe(old), describe(new), changes_between(old, new), guests)
