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
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from typing_extensions import TypedDict

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import IncompatibleError, InputError
from guestcpu.fleet.matrix import Words, and_all, column_lacking, or_all, subset_matrix
from guestcpu.fleet.view import FleetView, HostReason, HostView
from guestcpu.formats.libvirt_xml import format_cpu
from guestcpu.lifecycle.levels import level_cpu, level_table
from guestcpu.model.cpu import CpuDefinition, CpuType, FeatureRequest, Match, Mode, Policy
from guestcpu.model.features import iter_bits
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.hypervisor import (
    HypervisorComparison,
    baseline_everywhere,
    effective_cpu,
    host_model,
    hypervisor_compare,
    known_bits,
    model_blockers,
    offered_bits,
)

DOMCAPS_NOTE = "judged from libvirt domcapabilities; QEMU's own expansion unknown"


def bits_to_words(bits: int, words: int) -> Words:
    return np.frombuffer(bits.to_bytes(words * 8, "little"), dtype=np.uint64).copy()


def words_for(catalog: Catalog) -> int:
    return (len(catalog.features) + 63) // 64


class LeftOutJson(TypedDict):
    feature: str
    hosts_lacking: list[str]


class HostVerdictJson(TypedDict):
    host: str
    result: str
    verified_startable: bool
    note: str


class BaselineJson(TypedDict):
    """``FleetBaseline.to_json()``: the body of ``fleet baseline --json``."""

    cluster: str | None
    accel: str
    model: str
    level: str | None
    #: the CPU as libvirt domain XML
    cpu: str
    features: list[str]
    left_out: list[LeftOutJson]
    not_enabled_common: list[str]
    limiting_hosts: list[str]
    hosts: list[HostVerdictJson]
    skipped: list[HostReason]
    distinct_profiles: int
    judged_profiles: int
    notes: list[str]


class BaselineChangeJson(TypedDict):
    """``compare_baselines``: how a baseline changes."""

    model_before: str
    model_after: str
    model_changed: bool
    features_gained: list[str]
    features_lost: list[str]


@dataclass(frozen=True)
class LeftOut:
    """A feature some host offers that the baseline leaves out, and the hosts that keep it out."""

    feature: str
    #: every host's name, and which of them lack the feature (names are built only when asked for)
    names: npt.NDArray[np.object_] = field(repr=False, compare=False)
    mask: npt.NDArray[np.bool_] = field(repr=False, compare=False)

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    @property
    def lacking(self) -> tuple[str, ...]:
        return tuple(self.names[self.mask])

    def to_json(self) -> LeftOutJson:
        return {"feature": self.feature, "hosts_lacking": list(self.lacking)}


@dataclass(frozen=True)
class HostVerdict:
    host: str
    result: str
    verified: bool
    note: str = ""

    def to_json(self) -> HostVerdictJson:
        return {"host": self.host, "result": self.result, "verified_startable": self.verified, "note": self.note}


@dataclass(frozen=True)
class FleetBaseline:
    cluster: str | None
    accel: str
    #: the versioned QEMU model and the explicit CPU
    model: str
    #: mixed vendors: the x86-64 level the CPU stands for (else None: a named model)
    level: str | None
    cpu: CpuDefinition
    features: tuple[str, ...]
    left_out: tuple[LeftOut, ...]
    not_enabled_common: tuple[str, ...]
    hosts: tuple[HostVerdict, ...]
    #: hosts left out of the answer (no such accelerator)
    skipped: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]
    profiles: int
    #: profiles judged by QEMU's rules in full (the minimal ones); the rest follow from them
    judged_profiles: int = 0

    @property
    def limiting_hosts(self) -> list[str]:
        """Hosts that alone keep some feature out (removing them would add it)."""
        found: dict[str, None] = {}
        for item in self.left_out:
            for host in item.lacking:
                found.setdefault(host)
        return sorted(found)

    def to_json(self) -> BaselineJson:
        return {
            "cluster": self.cluster,
            "accel": self.accel,
            "model": self.model,
            "level": self.level,
            "cpu": format_cpu(self.cpu),
            "features": list(self.features),
            "left_out": [item.to_json() for item in self.left_out],
            "not_enabled_common": list(self.not_enabled_common),
            "limiting_hosts": self.limiting_hosts,
            "hosts": [verdict.to_json() for verdict in self.hosts],
            "skipped": [{"host": h, "reason": r} for h, r in self.skipped],
            "distinct_profiles": self.profiles,
            "judged_profiles": self.judged_profiles,
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


@dataclass(frozen=True)
class _Chosen:
    qemu_model: str
    cpu: CpuDefinition
    features: int
    notes: tuple[str, ...]
    #: (representative host, the CPU judged against its QEMU), one per profile
    verdicts: tuple[tuple[str, HypervisorComparison], ...]
    level: str | None = None


def _named_baseline(cpus: Sequence[CpuDefinition], reps: Sequence[tuple[str, QemuCaps]], catalog: Catalog,
                    machine: str | None) -> _Chosen:
    everywhere = baseline_everywhere(cpus, reps, catalog, machine=machine)
    result = everywhere.result
    return _Chosen(result.qemu_model, result.cpu, result.features, result.notes, everywhere.verdicts)


def _mixed_vendor_baseline(reps: Sequence[tuple[str, QemuCaps]], catalog: Catalog, machine: str | None) -> _Chosen:
    """Intel and AMD hosts together: the highest x86-64 level every host offers, as a base model plus features."""
    table = level_table()
    common = catalog.all_bits
    for _, caps in reps:
        common &= offered_bits(caps, catalog, migratable=True)
    best = table.highest(common, catalog)
    if best is None:
        raise IncompatibleError("the hosts are of more than one vendor and do not all offer x86-64-v1")
    cpu = level_cpu(CpuDefinition(type=CpuType.GUEST, mode=Mode.CUSTOM, match=Match.EXACT, model=best.name), catalog)
    needed = table.bits(best, catalog)
    # what the base model has beyond the level and some host cannot give (nx, pse36 …) is turned off at once
    first = effective_cpu(cpu, reps[0][1], catalog, machine=machine).features & ~common & ~needed
    if first:
        cpu = cpu.with_(features=(*cpu.features, *(FeatureRequest(n, Policy.DISABLE) for n in catalog.names(first))))
    for _ in range(3):
        verdicts = tuple((label, hypervisor_compare(cpu, caps, catalog, machine=machine)) for label, caps in reps)
        missing = 0
        for _, verdict in verdicts:
            missing |= verdict.comparison.missing_bits
        if not missing or missing & needed:
            break
        # another QEMU's base model may have more of them
        off = tuple(FeatureRequest(name, Policy.DISABLE) for name in catalog.names(missing))
        cpu = cpu.with_(features=(*cpu.features, *off))
    failing = [f"{label}: {v.comparison.reason}" for label, v in verdicts if v.comparison.missing_bits]
    if failing:
        raise IncompatibleError(f"{best.name} cannot be given everywhere: " + "; ".join(failing))
    effective = verdicts[0][1].effective
    note = (f"the hosts are of more than one vendor: no named model runs on all of them; {best.name} is "
            f"{effective.qemu_model} with the level's features explicit (what 'define' gives for {best.name})")
    return _Chosen(effective.qemu_model, effective.cpu, effective.features, (*effective.notes, note), verdicts,
                   best.name)


def prepare(view: FleetView, catalog: Catalog, accel: str = "kvm") -> None:
    """Derive each profile's facts once (offer, known features, host-model), as a loaded inventory keeps them."""
    for profile in view.profiles.values():
        if profile.caps.accel == accel:
            offered_bits(profile.caps, catalog, migratable=True)
            known_bits(profile.caps, catalog)
            if profile.caps.host_static is not None:
                host_model(profile.caps, catalog)


def _vendor(caps: QemuCaps) -> object:
    return caps.host_static.get("vendor") if caps.host_static else None


def _qemu_identity(caps: QemuCaps) -> tuple[str, ...]:
    """Profiles with the same QEMU build define every model alike; only their offers differ."""
    return (caps.qemu_version, caps.accel, caps.package, caps.binary, str(len(caps.models)))


def minimal_profiles(rows: Words, identities: Sequence[tuple[str, ...]]) -> list[int]:
    """Indexes of the profiles no other profile of the same QEMU is a strict subset of (equal rows: the first).

    A baseline every minimal profile can give, every profile can give: a profile that
    offers a superset of another's features, on the same QEMU, blocks no model the
    other can run.  Only the minimal ones need QEMU's full judgement.
    """
    inside = subset_matrix(rows, rows)  # inside[i, j]: row i is a subset of row j
    keep = []
    for i in range(rows.shape[0]):
        dominated = False
        for j in (int(x) for x in np.flatnonzero(inside[:, i])):
            if j == i or identities[j] != identities[i]:
                continue
            if not inside[i, j] or j < i:  # j strictly below i, or equal and earlier
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return keep


def fleet_baseline(
    view: FleetView, catalog: Catalog, *, accel: str = "kvm", cluster: str | None = None,
    machine: str | None = None,
) -> FleetBaseline:
    view = view.in_cluster(cluster)
    hosts, skipped = _pick_hosts(view, accel)
    if not hosts:
        where = f"cluster '{cluster}'" if cluster else "the inventory"
        raise InputError(f"{where} has no host with {accel} capabilities; add hosts with 'guestcpu fleet add'")
    index: dict[str, int] = {}
    first: list[str] = []
    host_profile = []
    for host in hosts:  # one pass: each host's profile number, and the first host of each profile
        digest = host.profiles[accel]
        found = index.get(digest)
        if found is None:
            found = index[digest] = len(first)
            first.append(host.name)
        host_profile.append(found)
    digests = list(index)
    caps_list = [view.profiles[d].caps for d in digests]
    width = words_for(catalog)
    offers = [offered_bits(caps, catalog, migratable=True) for caps in caps_list]
    usable = [offer & known_bits(caps, catalog) for offer, caps in zip(offers, caps_list, strict=True)]
    usable_rows = np.stack([bits_to_words(bits, width) for bits in usable])
    chosen = minimal_profiles(usable_rows, [_qemu_identity(c) for c in caps_list])
    reps = [(first[i], caps_list[i]) for i in chosen]
    if len({_vendor(caps) for caps in caps_list}) > 1:
        result = _mixed_vendor_baseline(reps, catalog, machine)
    else:
        result = _named_baseline([host_model(caps, catalog).cpu for _, caps in reps], reps, catalog, machine)
    judged = {digests[i]: verdict for i, (_, verdict) in zip(chosen, result.verdicts, strict=True)}
    # every other profile by the same rule on its rows: the result's features within what it can give
    need = bits_to_words(result.features, width)
    missing_rows = need[None, :] & ~usable_rows
    fits: npt.NDArray[np.bool_] = np.asarray(~missing_rows.any(axis=1), dtype=np.bool_)
    host_index = np.array(host_profile, dtype=np.intp)
    offer_rows = np.stack([bits_to_words(bits, width) for bits in offers])
    host_rows = offer_rows[host_index]
    common = int.from_bytes(and_all(host_rows).tobytes(), "little")
    union = int.from_bytes(or_all(host_rows).tobytes(), "little")
    names = np.array([h.name for h in hosts], dtype=object)  # names of the lacking hosts are built when asked
    left_out = [LeftOut(catalog.features[bit].name, names, column_lacking(host_rows, bit))
                for bit in iter_bits(union & ~common & ~result.features)]
    left_out.sort(key=lambda item: (item.count, item.feature))
    unused = catalog.names(common & ~result.features)
    per_profile = []
    for i, digest in enumerate(digests):
        verdict = judged.get(digest)
        if verdict is not None:
            ok = verdict.comparison.missing_bits == 0 and bool(fits[i])
            value = verdict.result.value if ok else "incompatible"
        else:
            # QEMU's own blockers of the chosen model there count too, as in hypervisor_compare
            blocked = catalog.bits(model_blockers(caps_list[i], catalog, result.qemu_model)[0]) & result.features
            ok = bool(fits[i]) and not blocked
            value = ("superset" if usable[i] & ~result.features else "identical") if ok else "incompatible"
        verified = view.profiles[digest].verified
        per_profile.append((value, verified and ok, "" if verified else DOMCAPS_NOTE))
    verdicts = [HostVerdict(host.name, *per_profile[i]) for host, i in zip(hosts, host_profile, strict=True)]
    return FleetBaseline(
        cluster=cluster, accel=accel, model=result.qemu_model, level=result.level, cpu=result.cpu,
        features=tuple(catalog.names(result.features)), left_out=tuple(left_out),
        not_enabled_common=tuple(unused), hosts=tuple(verdicts), skipped=tuple(skipped),
        notes=result.notes, profiles=len(digests), judged_profiles=len(chosen),
    )


def compare_baselines(before: FleetBaseline, after: FleetBaseline) -> BaselineChangeJson:
    """How a baseline changes: model, features gained and lost."""
    old, new = set(before.features), set(after.features)
    return {
        "model_before": before.model, "model_after": after.model, "model_changed": before.model != after.model,
        "features_gained": sorted(new - old), "features_lost": sorted(old - new),
    }


def host_names(hosts: Sequence[HostView]) -> list[str]:
    return [h.name for h in hosts]
