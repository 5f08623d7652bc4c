"""Decode CPU data (a feature set, vendor and signature) to the nearest catalog model.

This follows libvirt 11.3's x86Decode exactly, so that the same data gives the same
answer, and also records *why*: every candidate's cost, and what decided the winner.

* candidates are tried newest first (reverse catalog order);
* models of another vendor are skipped;
* a model whose signature matches the CPU's family/model beats one that does not;
* host flavour: a model needing a disabled feature is not allowed; cost = extra features;
* guest flavour: cost = extra features + 2, 3, 4 … for successive disabled features
  (with libvirt's exact counting, see ``_guest_cost``); removed model features are
  added as disabled;
* ties keep the newer model; a single preferred model wins outright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.model.cpu import CpuDefinition, CpuType, Fallback, FeatureRequest, Match, Mode, Policy
from guestcpu.model.cpuid import CpuidData, Signature
from guestcpu.model.cpumodel import CpuModel
from guestcpu.model.features import iter_bits

_BASE_PENALTY = 2
_SIGNATURE_MASK = 0x0FFF3FFF
_BROKEN_TSX_MODELS = (60, 69, 70)


@dataclass(frozen=True)
class Candidate:
    model: CpuModel
    required: int
    disabled: int
    #: removed model features added as disabled (guest flavour), in catalog order
    removed_disabled: int
    signature_match: bool

    @property
    def required_count(self) -> int:
        return self.required.bit_count()

    @property
    def disabled_count(self) -> int:
        return (self.disabled | self.removed_disabled).bit_count()


@dataclass(frozen=True)
class CpuFacts:
    """What decode needs to know about a CPU."""

    features: int
    vendor: str | None
    #: leaf-1 EAX masked as libvirt does; 0 when unknown (baseline)
    signature_eax: int = 0


@dataclass(frozen=True)
class DecodeResult:
    cpu: CpuDefinition
    model: CpuModel
    required: list[str]
    disabled: list[str]
    cost: int
    #: runner-ups and why they lost, best first (at most 5)
    alternatives: list[dict[str, object]] = field(default_factory=list)
    tsx_dropped: bool = False


def facts_from_cpuid(data: CpuidData, catalog: Catalog) -> CpuFacts:
    vendor = catalog.vendor_by_string(data.vendor_string)
    return CpuFacts(
        features=catalog.features_from_cpuid(data),
        vendor=vendor.name if vendor else None,
        signature_eax=data.signature_eax,
    )


def _guest_cost(required: int, disabled: int) -> tuple[int, int]:
    """(total cost, disabled penalty) exactly as libvirt 11.3 computes them.

    libvirt walks the feature list (required first, then disabled) with a loop bound
    that shrinks each time it meets a disabled feature, so only the first
    ceil(disabled/2) disabled features are charged.  Matching that quirk is what
    keeps our answers identical to libvirt's on the same data.
    """
    enabled = required + disabled
    penalty_sum = 0
    penalty = _BASE_PENALTY
    i = 0
    while i < enabled:
        if i >= required:
            enabled -= 1
            penalty_sum += penalty
            penalty += 1
        i += 1
    return enabled + penalty_sum, penalty_sum


def _cost(candidate: Candidate, cpu_type: CpuType) -> tuple[int, int]:
    if cpu_type is CpuType.HOST:
        return candidate.required_count, 0
    return _guest_cost(candidate.required_count, candidate.disabled_count)


def _signature_matches(model: CpuModel, signature_eax: int) -> bool:
    if not signature_eax:
        return False
    sig = Signature.from_eax(signature_eax)
    return model.matches_signature(sig.family, sig.model, sig.stepping)


def filter_broken_tsx(facts: CpuFacts, catalog: Catalog) -> tuple[CpuFacts, bool]:
    """Drop hle/rtm on the Intel parts whose TSX microcode disabled (libvirt's rule)."""
    if facts.vendor != "Intel" or not facts.signature_eax:
        return facts, False
    sig = Signature.from_eax(facts.signature_eax)
    if sig.family == 6 and (sig.model in _BROKEN_TSX_MODELS or (sig.model == 63 and sig.stepping < 4)):
        tsx = 0
        for name in ("hle", "rtm"):
            if catalog.has_feature(name):
                tsx |= 1 << catalog.feature(name).index
        if facts.features & tsx:
            return CpuFacts(facts.features & ~tsx, facts.vendor, facts.signature_eax), True
    return facts, False


def _better(
    cand: Candidate, cost: tuple[int, int], best: Candidate, best_cost: tuple[int, int], preferred: bool, signed: bool
) -> bool:
    """Does ``cand`` beat ``best``?  A matching signature first, then cost, then fewer disabled."""
    if signed and cand.signature_match and not best.signature_match:
        return True
    if cost[0] < best_cost[0] or (cost[0] == best_cost[0] and cost[1] < best_cost[1]):
        return True
    return preferred and cost[1] < best_cost[1]


def _make_candidate(
    facts: CpuFacts, model: CpuModel, blockers: Sequence[str] | None, cpu_type: CpuType, catalog: Catalog
) -> Candidate:
    required = facts.features & ~model.features
    disabled = model.features & ~facts.features
    if blockers:
        for name in blockers:
            if not catalog.has_feature(name):
                continue  # libvirt ignores blockers it has no name for
            bit = 1 << catalog.feature(name).index
            if not required & bit:
                disabled |= bit
    removed_disabled = 0
    if cpu_type is CpuType.GUEST:
        mentioned = required | disabled
        removed_disabled = model.removed & ~mentioned
    return Candidate(model, required, disabled, removed_disabled, _signature_matches(model, facts.signature_eax))


def decode(
    facts: CpuFacts,
    catalog: Catalog,
    cpu_type: CpuType = CpuType.GUEST,
    *,
    models: Mapping[str, Sequence[str]] | None = None,
    preferred: Sequence[str] = (),
    fallback: Fallback | None = None,
    migratable: bool = False,
    explain: bool = False,
) -> DecodeResult:
    """The nearest model for ``facts``.

    ``models`` restricts the choice to those names (e.g. what QEMU offers), each with
    the features QEMU says block it; they are disabled in the answer.
    """
    facts, tsx_dropped = filter_broken_tsx(facts, catalog)
    preferred = [p for p in preferred if p]
    single_preferred = preferred[0] if len(preferred) == 1 else None
    best: Candidate | None = None
    best_cost = (0, 0)
    considered: list[tuple[Candidate, str]] = []

    for model in reversed(catalog.models):
        blockers: Sequence[str] | None = None
        if models is not None:
            if model.name not in models:
                if single_preferred == model.name and fallback is not Fallback.ALLOW:
                    raise GuestCpuError(f"CPU model {model.name} is not supported by the hypervisor")
                continue
            blockers = models[model.name]
        if facts.vendor and model.vendor and facts.vendor != model.vendor:
            continue
        if cpu_type is CpuType.HOST and not model.decode_host:
            continue
        if cpu_type is CpuType.GUEST and not model.decode_guest:
            continue
        cand = _make_candidate(facts, model, blockers, cpu_type, catalog)
        if cpu_type is CpuType.HOST and cand.disabled:
            if explain:
                considered.append((cand, "would need disabled features, which a host CPU cannot express"))
            continue
        is_preferred = model.name in preferred
        if is_preferred and single_preferred is not None:
            best = cand
            best_cost = _cost(cand, cpu_type)
            break
        cost = _cost(cand, cpu_type)
        if best is None:
            best, best_cost = cand, cost
            continue
        if facts.signature_eax and best.signature_match and not cand.signature_match:
            if explain:
                considered.append((cand, f"signature does not match, {best.model.name}'s does"))
            continue
        if _better(cand, cost, best, best_cost, is_preferred, bool(facts.signature_eax)):
            if explain:
                considered.append((best, f"{cand.model.name} is better"))
            best, best_cost = cand, cost
        elif explain:
            considered.append((cand, f"cost {cost[0]} is not below {best.model.name}'s {best_cost[0]}"))

    if best is None:
        raise InputError("cannot find a suitable CPU model for the given data")

    return _result(best, best_cost[0], facts, catalog, cpu_type, migratable, considered, tsx_dropped)


def _result(
    best: Candidate,
    cost: int,
    facts: CpuFacts,
    catalog: Catalog,
    cpu_type: CpuType,
    migratable: bool,
    considered: list[tuple[Candidate, str]],
    tsx_dropped: bool,
) -> DecodeResult:
    keep = catalog.migratable_bits if migratable else catalog.all_bits
    required = list(iter_bits(best.required & keep))
    disabled = list(iter_bits(best.disabled & keep)) + list(iter_bits(best.removed_disabled & keep))
    req_policy = None if cpu_type is CpuType.HOST else Policy.REQUIRE
    features = tuple(FeatureRequest(catalog.features[i].name, req_policy) for i in required) + tuple(
        FeatureRequest(catalog.features[i].name, Policy.DISABLE) for i in disabled
    )
    signature = None
    if facts.signature_eax:
        sig = Signature.from_eax(facts.signature_eax)
        signature = (sig.family, sig.model, sig.stepping)
    if cpu_type is CpuType.HOST:
        cpu = CpuDefinition(
            type=CpuType.HOST,
            arch="x86_64",
            model=best.model.name,
            vendor=facts.vendor,
            signature=signature,
            features=features,
        )
    else:
        cpu = CpuDefinition(
            type=CpuType.GUEST,
            mode=Mode.CUSTOM,
            match=Match.EXACT,
            model=best.model.name,
            fallback=Fallback.FORBID,
            vendor=facts.vendor,
            features=features,
        )
    alternatives = [
        {
            "model": cand.model.name,
            "required": cand.required_count,
            "disabled": cand.disabled_count,
            "cost": _cost(cand, cpu_type)[0],
            "why_not": why,
        }
        for cand, why in sorted(considered, key=lambda c: _cost(c[0], cpu_type))[:5]
    ]
    return DecodeResult(
        cpu=cpu,
        model=best.model,
        required=[catalog.features[i].name for i in required],
        disabled=[catalog.features[i].name for i in disabled],
        cost=cost,
        alternatives=alternatives,
        tsx_dropped=tsx_dropped,
    )
