"""``fleet levels``: the x86-64-vN level each host can give a guest, the cluster's, and which guest OS runs where.

A host's level comes from its QEMU offer under the accelerator (what a guest can be
given), never from its /proc/cpuinfo flags.  The guest OS minimums are data
(``data/guest-os.json``, each with its source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from typing_extensions import TypedDict

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.fleet.view import FleetView, HostReason
from guestcpu.lifecycle.levels import Level, level_table
from guestcpu.qemu.hypervisor import offered_bits


class HostLevelJson(TypedDict):
    host: str
    level: str
    level_number: int
    #: what the host lacks for the next level up
    next_level_missing: list[str]


class OsPlacementJson(TypedDict):
    os: str
    needs: str
    also_needs: list[str]
    source: str
    hosts: list[str]
    refused: list[HostReason]


class LevelsJson(TypedDict):
    """``FleetLevels.to_json()``: the body of ``fleet levels --json``."""

    cluster: str | None
    accel: str
    cluster_level: str
    limiting_hosts: list[str]
    hosts: list[HostLevelJson]
    guest_os: list[OsPlacementJson]


@dataclass(frozen=True)
class GuestOs:
    name: str
    level: int
    features: tuple[str, ...]
    source: str


@cache
def guest_os_table() -> tuple[GuestOs, ...]:
    doc: dict[str, Any] = json.loads(resources.files("guestcpu.fleet").joinpath("data/guest-os.json").read_text())
    return tuple(GuestOs(e["name"], int(e["level"]), tuple(e.get("features", ())), e["source"]) for e in doc["os"])


@dataclass(frozen=True)
class HostLevel:
    host: str
    level: int
    #: for the next level up: the features this host cannot give
    next_missing: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"x86-64-v{self.level}" if self.level else "below x86-64-v1"

    def to_json(self) -> HostLevelJson:
        return {"host": self.host, "level": self.name, "level_number": self.level,
                "next_level_missing": list(self.next_missing)}


@dataclass(frozen=True)
class OsPlacement:
    os: GuestOs
    hosts: tuple[str, ...]
    #: host -> what it lacks for this OS
    refused: tuple[tuple[str, str], ...]

    def to_json(self) -> OsPlacementJson:
        return {"os": self.os.name, "needs": f"x86-64-v{self.os.level}", "also_needs": list(self.os.features),
                "source": self.os.source, "hosts": list(self.hosts),
                "refused": [{"host": h, "reason": r} for h, r in self.refused]}


@dataclass(frozen=True)
class FleetLevels:
    cluster: str | None
    accel: str
    hosts: tuple[HostLevel, ...]
    cluster_level: int
    limiting: tuple[str, ...]
    guest_os: tuple[OsPlacement, ...]

    def to_json(self) -> LevelsJson:
        return {
            "cluster": self.cluster, "accel": self.accel,
            "cluster_level": f"x86-64-v{self.cluster_level}" if self.cluster_level else "below x86-64-v1",
            "limiting_hosts": list(self.limiting), "hosts": [h.to_json() for h in self.hosts],
            "guest_os": [o.to_json() for o in self.guest_os],
        }


def fleet_levels(view: FleetView, catalog: Catalog, *, accel: str = "kvm", cluster: str | None = None) -> FleetLevels:
    view = view.in_cluster(cluster)
    table = level_table()
    offers: dict[str, int] = {}
    results = []
    for host in view.hosts:
        caps = view.caps(host, accel)
        if caps is None:
            continue
        offered = offers.setdefault(host.profiles[accel], offered_bits(caps, catalog, migratable=True))
        best: Level | None = table.highest(offered, catalog)
        number = best.number if best else 0
        missing: tuple[str, ...] = ()
        if number < len(table.levels):
            following = table.levels[number]
            missing = tuple(catalog.names(table.bits(following, catalog) & ~offered))
        results.append((HostLevel(host.name, number, missing), offered))
    if not results:
        raise InputError(f"no host with {accel} capabilities in {'cluster ' + cluster if cluster else 'the inventory'}")
    lowest = min(h.level for h, _ in results)
    limiting = tuple(h.host for h, _ in results if h.level == lowest)
    placements = []
    for guest in guest_os_table():
        ok, refused = [], []
        extra = catalog.bits(guest.features, guest.name)
        for level, offered in results:
            lacking = catalog.names(extra & ~offered)
            if level.level >= guest.level and not lacking:
                ok.append(level.host)
            elif level.level < guest.level:
                refused.append((level.host, f"gives {level.name}, needs x86-64-v{guest.level}"))
            else:
                refused.append((level.host, f"lacks {', '.join(lacking)}"))
        placements.append(OsPlacement(guest, tuple(ok), tuple(refused)))
    return FleetLevels(cluster, accel, tuple(h for h, _ in results), lowest, limiting, tuple(placements))
