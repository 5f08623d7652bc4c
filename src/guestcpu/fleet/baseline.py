"""``fleet baseline``: the best CPU every host of a cluster can give, and what it costs (pure).

The CPU itself comes from ``qemu.hypervisor.baseline_everywhere`` over one
representative of each distinct capability profile (hosts with the same profile
give the same answer): each host's QEMU offer, never its raw CPUID, decides.  Around
it, numpy rows of every host's offer say

* for each feature some host offers but the result leaves out, which hosts lack it;
* which features *every* host offers and the result still leaves unused (Deckhouse's
  ``notEnabledCommon``: performance left on the table by the named model's shape);
* on which hosts the result is verified startable (QEMU's own expansions in the
  profile) and on which it is only judged from libvirt's domcapabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.fleet.matrix import Words, and_all, column_lacking, or_all
from guestcpu.fleet.view import FleetView, HostView
from guestcpu.formats.libvirt_xml import format_cpu
from guestcpu.model.cpu import CpuDefinition
from guestcpu.model.features import iter_bits
from guestcpu.qemu.hypervisor import EverywhereBaseline, baseline_everywhere, host_model, offered_bits

DOMCAPS_NOTE = "judged from libvirt domcapabilities; QEMU's own expansion unknown"


def bits_to_words(bits: int, words: int) -> Words:
    return np.frombuffer(bits.to_bytes(words * 8, "little"), dtype=np.uint64).copy()


def words_for(catalog: Catalog) -> int:
    return (len(catalog.features) + 63) // 64


@dataclass(frozen=True)
class LeftOut:
    feature: str
    #: hosts that cannot give it (the ones that keep it out of the baseline)
    lacking: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "hosts_lacking": list(self.lacking)}


@dataclass(frozen=True)
class HostVerdict:
    host: str
    result: str
    verified: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "result": self.result, "verified_startable": self.verified, "note": self.note}


@dataclass(frozen=True)
class FleetBaseline:
    cluster: str | None
    accel: str
    #: the versioned QEMU model and the explicit CPU
    model: str
    cpu: CpuDefinition
    features: tuple[str, ...]
    left_out: tuple[LeftOut, ...]
    not_enabled_common: tuple[str, ...]
    hosts: tuple[HostVerdict, ...]
    #: hosts left out of the answer (no such accelerator)
    skipped: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]
    profiles: int

    @property
    def limiting_hosts(self) -> list[str]:
        """Hosts that alone keep some feature out (removing them would add it)."""
        found: dict[str, None] = {}
        for item in self.left_out:
            for host in item.lacking:
                found.setdefault(host)
        return sorted(found)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "accel": self.accel,
            "model": self.model,
            "cpu": format_cpu(self.cpu),
            "features": list(self.features),
            "left_out": [item.to_json() for item in self.left_out],
            "not_enabled_common": list(self.not_enabled_common),
            "limiting_hosts": self.limiting_hosts,
            "hosts": [verdict.to_json() for verdict in self.hosts],
            "skipped": [{"host": h, "reason": r} for h, r in self.skipped],
            "distinct_profiles": self.profiles,
            "notes": list(self.notes),
        }


def _pick_hosts(view: FleetView, accel: str) -> tuple[list[HostView], list[tuple[str, str]]]:
    chosen, skipped = [], []
    for host in view.hosts:
        if accel in host.profiles:
            chosen.append(host)
        else:
            skipped.append((host.name, host.unavailable.get(accel, f"no {accel} capabilities recorded")))
    return chosen, skipped


def fleet_baseline(
    view: FleetView, catalog: Catalog, *, accel: str = "kvm", cluster: str | None = None,
    machine: str | None = None,
) -> FleetBaseline:
    view = view.in_cluster(cluster)
    hosts, skipped = _pick_hosts(view, accel)
    if not hosts:
        where = f"cluster '{cluster}'" if cluster else "the inventory"
        raise InputError(f"{where} has no host with {accel} capabilities; add hosts with 'guestcpu fleet add'")
    groups = view.groups(accel)
    digests = list(groups)
    reps = [(groups[d][0].name, view.profiles[d].caps) for d in digests]
    cpus = [host_model(caps, catalog).cpu for _, caps in reps]
    everywhere: EverywhereBaseline = baseline_everywhere(cpus, reps, catalog, machine=machine)
    result = everywhere.result
    width = words_for(catalog)
    profile_rows = np.stack([bits_to_words(offered_bits(caps, catalog, migratable=True), width) for _, caps in reps])
    index = {d: i for i, d in enumerate(digests)}
    host_rows = profile_rows[np.array([index[h.profiles[accel]] for h in hosts])]
    common = int.from_bytes(and_all(host_rows).tobytes(), "little")
    union = int.from_bytes(or_all(host_rows).tobytes(), "little")
    left_out = []
    for bit in iter_bits(union & ~common & ~result.features):
        lacking = column_lacking(host_rows, bit)
        names = tuple(hosts[i].name for i in np.flatnonzero(lacking))
        left_out.append(LeftOut(catalog.features[bit].name, names))
    left_out.sort(key=lambda item: (len(item.lacking), item.feature))
    unused = catalog.names(common & ~result.features)
    verdict_by_digest = {d: everywhere.verdicts[i][1] for i, d in enumerate(digests)}
    verdicts = []
    for host in hosts:
        digest = host.profiles[accel]
        verdict = verdict_by_digest[digest]
        verified = view.profiles[digest].verified and verdict.comparison.missing_bits == 0
        note = "" if view.profiles[digest].verified else DOMCAPS_NOTE
        verdicts.append(HostVerdict(host.name, verdict.result.value, verified, note))
    return FleetBaseline(
        cluster=cluster, accel=accel, model=result.qemu_model, cpu=result.cpu,
        features=tuple(catalog.names(result.features)), left_out=tuple(left_out),
        not_enabled_common=tuple(unused), hosts=tuple(verdicts), skipped=tuple(skipped),
        notes=result.notes, profiles=len(digests),
    )


def compare_baselines(before: FleetBaseline, after: FleetBaseline) -> dict[str, Any]:
    """How a baseline changes: model, features gained and lost."""
    old, new = set(before.features), set(after.features)
    return {
        "model_before": before.model, "model_after": after.model, "model_changed": before.model != after.model,
        "features_gained": sorted(new - old), "features_lost": sorted(old - new),
    }


def host_names(hosts: Sequence[HostView]) -> list[str]:
    return [h.name for h in hosts]
