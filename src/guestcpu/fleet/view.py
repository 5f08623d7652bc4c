"""A fleet loaded into memory: hosts, the capability profiles they share, pins (pure value types).

The answers work on a ``FleetView``; ``inventory.load_view`` builds one from the
store and ``whatif`` builds changed copies of it.  Profiles are keyed by digest and
parsed once, however many hosts share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from typing_extensions import TypedDict

from guestcpu.errors import UnknownNameError
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.caps import QemuCaps


class HostJson(TypedDict):
    """``HostView.to_json()``: one host of ``fleet hosts --json``."""

    name: str
    cluster: str
    tags: list[str]
    operational: bool
    status_note: str
    accels: list[str]
    qemu_version: str
    source: str


class HostReason(TypedDict):
    """A host and why (it was skipped, refused, cannot run something)."""

    host: str
    reason: str


@dataclass(frozen=True)
class ProfileView:
    digest: str
    caps: QemuCaps
    verified: bool


@dataclass(frozen=True)
class HostView:
    name: str
    cluster: str
    tags: tuple[str, ...] = ()
    operational: bool = True
    status_note: str = ""
    #: accelerator -> profile digest
    profiles: Mapping[str, str] = field(default_factory=dict)
    #: accelerator -> why the host has no such profile
    unavailable: Mapping[str, str] = field(default_factory=dict)
    qemu_version: str = ""
    source: str = ""

    def to_json(self) -> HostJson:
        return {
            "name": self.name, "cluster": self.cluster, "tags": list(self.tags), "operational": self.operational,
            "status_note": self.status_note, "accels": sorted(self.profiles), "qemu_version": self.qemu_version,
            "source": self.source,
        }


@dataclass(frozen=True)
class PinView:
    name: str
    pin: Pin
    #: the host the guest runs on (None: not known)
    host: str | None = None


@dataclass(frozen=True)
class FleetView:
    hosts: tuple[HostView, ...]
    profiles: Mapping[str, ProfileView]
    pins: tuple[PinView, ...] = ()
    #: cluster -> name of its frozen pin
    frozen: Mapping[str, str] = field(default_factory=dict)

    def host(self, name: str) -> HostView:
        for host in self.hosts:
            if host.name == name:
                return host
        raise unknown("host", name, [h.name for h in self.hosts])

    def in_cluster(self, cluster: str | None) -> FleetView:
        """Only the hosts of ``cluster`` (None: all); an unknown cluster is an error."""
        if cluster is None:
            return self
        clusters = sorted({h.cluster for h in self.hosts})
        if cluster not in clusters:
            raise unknown("cluster", cluster, clusters)
        return replace(self, hosts=tuple(h for h in self.hosts if h.cluster == cluster))

    def caps(self, host: HostView, accel: str) -> QemuCaps | None:
        digest = host.profiles.get(accel)
        return self.profiles[digest].caps if digest else None

    def groups(self, accel: str) -> dict[str, list[HostView]]:
        """Profile digest -> the hosts that have it under ``accel`` (in host order)."""
        found: dict[str, list[HostView]] = {}
        for host in self.hosts:
            digest = host.profiles.get(accel)
            if digest is not None:
                found.setdefault(digest, []).append(host)
        return found

    def pins_named(self, names: Sequence[str]) -> list[PinView]:
        by_name = {p.name: p for p in self.pins}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise unknown("pin", missing[0], list(by_name))
        return [by_name[n] for n in names]


def unknown(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """A host, cluster or pin the inventory does not have (the service answers it with 404)."""
    return UnknownNameError(kind, name, known, none_known=f"the inventory has no {kind}s yet")
