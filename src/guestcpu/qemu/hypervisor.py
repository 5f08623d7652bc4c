"""What a guest CPU means on one QEMU, and hypervisor-aware compare and baseline (pure).

Everything here works on a ``QemuCaps`` (probed or read from a document) and the
catalog; no I/O.  The rule throughout: *QEMU's own expansion is the truth* for what a
model name gives under an accelerator (the catalog's definitions can disagree with a
given QEMU, and QEMU adds features on its own: ``hypervisor``, ``x2apic`` and the KVM
defaults).  A guest's explicit feature requests are applied on top of that.

* ``effective_cpu``: the exact feature set a guest CPU gets on this QEMU (``E``), the
  versioned model QEMU will run, and a fully explicit ``CpuDefinition`` of it;
* ``host_model``: the host-model decoded from QEMU's ``host`` (KVM) or ``max`` (TCG)
  expansion, restricted to the models this QEMU has;
* ``hypervisor_compare``: can this QEMU give the guest CPU (identical / superset /
  incompatible, naming the features);
* ``hypervisor_baseline``: the best CPU every input can run that this QEMU can start:
  every feature it requires is in QEMU's offer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.dependencies import dependencies_for
from guestcpu.engine.baseline import BaselineResult, baseline
from guestcpu.engine.compare import CompareResult, Comparison
from guestcpu.engine.decode import CpuFacts, DecodeResult, decode
from guestcpu.engine.expand import update_feature
from guestcpu.errors import GuestCpuError, IncompatibleError, InputError, UnknownNameError
from guestcpu.model.cpu import CpuDefinition, CpuType, Fallback, FeatureRequest, Match, Mode, Policy
from guestcpu.model.cpuid import Signature
from guestcpu.model.features import iter_bits
from guestcpu.qemu.caps import Expansion, QemuCaps

#: QEMU models that are not CPU definitions a guest can be pinned to.
SPECIAL_MODELS = frozenset({"host", "max", "base"})


class NotExpressibleError(GuestCpuError):
    """A CPU that this QEMU cannot be asked for."""


# -- features of expansions ---------------------------------------------------------
def expansion_bits(expansion: Expansion | None, catalog: Catalog) -> tuple[int, list[str]]:
    """(catalog feature bits that are on, true boolean props the catalog does not know)."""
    if expansion is None:
        return 0, []
    bits = 0
    unknown: list[str] = []
    from guestcpu.formats.qemu_json import NON_FEATURE_PROPS

    for key, value in expansion.props.items():
        if value is not True or key in NON_FEATURE_PROPS:
            continue
        if catalog.has_feature(key):
            bits |= 1 << catalog.feature(key).index
        else:
            unknown.append(key)
    return bits, unknown


def offered_bits(caps: QemuCaps, catalog: Catalog, *, migratable: bool = False) -> int:
    """Every catalog feature this QEMU can give a guest under its accelerator.

    That is more than the host/max expansion shows (``qemu.offer``: KVM grants
    ``topoext`` to the models that ask for it).  QEMU's own filtering does not apply
    the migratable mask, so by default the non-migratable features (``invtsc``) count
    as offered; ``migratable=True`` leaves them out (what a migratable guest may use).
    """
    from guestcpu.qemu.offer import supported_features

    key = ("offered_bits", id(catalog), migratable)
    cached = caps.memo.get(key)
    if cached is not None and cached[0] is catalog:  # the entry holds its catalog: the id cannot be reused
        return int(cached[1])
    bits = 0
    for name in supported_features(caps):
        if catalog.has_feature(name):
            bits |= 1 << catalog.feature(name).index
    if migratable:
        for name in caps.non_migratable:
            if catalog.has_feature(name):
                bits &= ~(1 << catalog.feature(name).index)
    caps.memo[key] = (catalog, bits)
    return bits


def known_bits(caps: QemuCaps, catalog: Catalog) -> int:
    """Catalog features this QEMU has a property for (it can be asked for them at all)."""
    cached = caps.memo.get(("known_bits", id(catalog)))
    if cached is not None and cached[0] is catalog:
        return int(cached[1])
    bits = 0
    for name in caps.known_props:
        if catalog.has_feature(name):
            bits |= 1 << catalog.feature(name).index
    caps.memo[("known_bits", id(catalog))] = (catalog, bits)
    return bits


def model_blockers(caps: QemuCaps, catalog: Catalog, name: str) -> tuple[list[str], list[str]]:
    """QEMU's blockers of ``name`` as (catalog names, names the catalog does not know)."""
    entry = caps.model(name)
    known: list[str] = []
    unknown: list[str] = []
    for blocker in entry.blockers if entry else ():
        if catalog.has_feature(blocker):
            canonical = catalog.feature(blocker).name
            if canonical not in known:
                known.append(canonical)
        else:
            unknown.append(blocker)
    return known, unknown


def qemu_models(caps: QemuCaps, catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """Models both QEMU and the catalog know, with QEMU's blockers (the engine's ``models``)."""
    cached = caps.memo.get(("qemu_models", id(catalog)))
    if cached is not None and cached[0] is catalog:
        return dict(cached[1])
    result: dict[str, tuple[str, ...]] = {}
    for entry in caps.models:
        if entry.name in SPECIAL_MODELS or not catalog.has_model(entry.name):
            continue
        result[entry.name] = tuple(model_blockers(caps, catalog, entry.name)[0])
    caps.memo[("qemu_models", id(catalog))] = (catalog, dict(result))
    return result


# -- host-model -----------------------------------------------------------------------
def host_facts(caps: QemuCaps, catalog: Catalog, *, migratable: bool = True) -> CpuFacts:
    bits = offered_bits(caps, catalog, migratable=migratable)
    expansion = caps.host_static
    vendor_string = expansion.get("vendor") if expansion else None
    vendor = catalog.vendor_by_string(vendor_string) if isinstance(vendor_string, str) else None
    signature = 0
    if expansion is not None and isinstance(expansion.get("family"), int) and isinstance(expansion.get("model"), int):
        signature = Signature(expansion.get("family"), expansion.get("model"), expansion.get("stepping", 0)).to_eax()
    return CpuFacts(bits, vendor.name if vendor else None, signature)


def host_model(caps: QemuCaps, catalog: Catalog, *, migratable: bool = True) -> DecodeResult:
    """The host-model: QEMU's host/max expansion decoded to the nearest model it has.

    Under KVM this is what this host can give; under TCG it depends on QEMU only.
    ``migratable=False`` keeps non-migratable features (``invtsc``).
    """
    if caps.host_static is None:
        raise InputError(f"the capabilities of {caps.binary} ({caps.accel}) have no {caps.host_model_name} expansion")
    key = ("host_model", id(catalog), migratable)
    cached = caps.memo.get(key)
    if cached is not None and cached[0] is catalog:
        found: DecodeResult = cached[1]
        return found
    result = decode(
        host_facts(caps, catalog, migratable=migratable),
        catalog,
        CpuType.GUEST,
        models=qemu_models(caps, catalog),
        migratable=migratable,
    )
    caps.memo[key] = (catalog, result)
    return result


# -- effective CPU ----------------------------------------------------------------------
@dataclass(frozen=True)
class EffectiveCpu:
    """A guest CPU made exact for one QEMU and accelerator."""

    #: what QEMU is asked for: a versioned model, ``host`` or ``max``
    qemu_model: str
    #: how a bare name was resolved: versioned / alias / v1 / latest / legacy / passthrough
    resolution: str
    #: the features the guest must get (catalog bits)
    features: int
    #: QEMU's own expansion of ``qemu_model`` (catalog bits)
    qemu_features: int
    #: explicit form: model + every deviation from catalog and QEMU, vendor, check
    cpu: CpuDefinition
    #: CPUID vendor string the guest must see (None: not pinned)
    vendor_string: str | None
    #: the catalog model QEMU's model stands for
    catalog_model: str | None
    #: true props of QEMU's expansion the catalog has no feature for (kvmclock …)
    qemu_only_props: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    check_name: str = "full"
    extra: dict[str, object] = field(default_factory=dict, compare=False)
    #: features the guest names itself (its <feature> elements): always explicit on -cpu,
    #: so that a machine type's compatibility properties cannot change them
    named: int = 0


def _explicit_cpu(
    model: str, wanted: int, catalog_bits: int, qemu_bits: int, catalog: Catalog, base: CpuDefinition,
    vendor: str | None, *, expand: bool = False,
) -> CpuDefinition:
    features: list[FeatureRequest] = []
    for index in iter_bits(wanted | catalog_bits | qemu_bits):
        bit = 1 << index
        on = bool(wanted & bit)
        differs = on != bool(catalog_bits & bit) or on != bool(qemu_bits & bit)
        if differs or (expand and on):
            features.append(FeatureRequest(catalog.features[index].name, Policy.REQUIRE if on else Policy.DISABLE))
    return CpuDefinition(
        type=CpuType.GUEST,
        mode=Mode.CUSTOM,
        match=Match.EXACT,
        check=base.check,
        model=model,
        fallback=Fallback.FORBID,
        vendor=vendor,
        vendor_id=base.vendor_id,
        topology=base.topology,
        features=tuple(features),
    )


def _model_vendor_string(catalog: Catalog, model_name: str | None) -> str | None:
    model = catalog.find_model(model_name) if model_name else None
    if model is None:
        return None
    if model.alias_of:
        model = catalog.find_model(model.alias_of) or model
    if model.identity is not None:
        return model.identity.vendor
    if model.vendor:
        try:
            return catalog.vendor(model.vendor).string
        except UnknownNameError:
            return None
    return None


def effective_cpu(
    guest: CpuDefinition, caps: QemuCaps, catalog: Catalog, *, machine: str | None = None
) -> EffectiveCpu:
    """The exact CPU ``guest`` gets on this QEMU (see the module docstring).

    ``machine`` does not change it: a bare name is judged as a new definition is pinned,
    the newest version both the catalog and QEMU have, on every machine type.
    """
    # the request, computed where define and run compute it
    from guestcpu.qemu.request import (
        ModelNotInQemuError,
        fall_back,
        feature_decisions,
        requested_vendor,
        resolve_model,
    )

    mode = guest.mode or Mode.CUSTOM
    check = (guest.check.value if guest.check else "full")
    if mode in (Mode.HOST_PASSTHROUGH, Mode.MAXIMUM):
        name = "host" if (mode is Mode.HOST_PASSTHROUGH and caps.accel == "kvm") else "max"
        if mode is Mode.HOST_PASSTHROUGH and caps.accel != "kvm":
            raise NotExpressibleError(
                "host-passthrough needs KVM (QEMU: CPU model 'host' requires KVM or HVF); use --accel kvm "
                "or mode='maximum'"
            )
        decided = feature_decisions(guest, caps, catalog)
        bits = ((offered_bits(caps, catalog, migratable=guest.migratable != "off") | decided.required_bits)
                & ~decided.disabled_bits)
        cpu = guest.with_(features=tuple(guest.features))
        vendor = caps.host_static.get("vendor") if caps.host_static else None
        return EffectiveCpu(name, "passthrough", bits, offered_bits(caps, catalog), cpu, vendor, None,
                            check_name=check)
    if mode is Mode.HOST_MODEL:
        decoded = host_model(caps, catalog).cpu
        features = list(decoded.features)
        for request in guest.features:
            update_feature(features, request.name, request.policy)
        guest = guest.with_(mode=Mode.CUSTOM, model=decoded.model, vendor=guest.vendor or decoded.vendor,
                            features=tuple(features))
    if guest.model is None:
        raise InputError(
            "the guest CPU has no <model>; name one (e.g. 'Skylake-Client-v4') or use mode='host-model'"
        )
    name = guest.model
    notes: list[str] = []
    if not caps.has_model(name):
        catalog.model(name, "guest CPU")  # UnknownNameError with suggestions
        try:
            guest, note = fall_back(guest, caps, catalog)
        except ModelNotInQemuError:
            raise NotExpressibleError(
                f"CPU model '{name}' is not provided by QEMU {caps.qemu_version} and fallback='forbid' keeps it"
            ) from None
        assert guest.model is not None
        notes.append(note)
        name = guest.model
    choice = resolve_model(name, caps, catalog)
    qemu_model = choice.qemu_model
    resolution = "versioned" if choice.rule == "explicit" else choice.rule
    notes.extend(choice.notes)
    entry = caps.model(qemu_model)
    if entry is None or entry.expansion is None:
        raise NotExpressibleError(f"this QEMU ({caps.binary}) has no expansion of CPU model {qemu_model}")
    qemu_bits, qemu_only = expansion_bits(entry.expansion, catalog)
    if qemu_model != name:
        notes.append(f"{name} resolves to {qemu_model} ({resolution})")
    catalog_model = qemu_model if catalog.has_model(qemu_model) else (name if catalog.has_model(name) else None)
    catalog_bits = catalog.model(catalog_model).features if catalog_model else 0
    decided = feature_decisions(guest, caps, catalog)
    on, off = decided.required_bits, decided.disabled_bits
    wanted = (qemu_bits | on) & ~off
    lacking = catalog_bits & ~qemu_bits
    if lacking and catalog.has_feature("vmx") and not qemu_bits >> catalog.feature("vmx").index & 1:
        # vmx-* capabilities only exist with vmx on; QEMU clears them otherwise (not a disagreement)
        lacking &= ~sum(1 << f.index for f in catalog.features if f.name.startswith("vmx-"))
    if lacking:
        notes.append(
            f"QEMU's {qemu_model} under {caps.accel} lacks {', '.join(catalog.names(lacking))}, which the catalog's "
            "definition has; QEMU's definition is used unless the guest asks for them"
        )
    # The vendor the guest sees, as define pins it: vendor_id, else <vendor>, else QEMU's
    # choice (under KVM the host's, under TCG the model's own).
    vendor_string = requested_vendor(guest, catalog)
    if vendor_string is None and caps.accel == "kvm" and caps.host_static is not None:
        found = caps.host_static.get("vendor")
        vendor_string = found if isinstance(found, str) else None
    if vendor_string is None and entry.expansion is not None:
        found = entry.expansion.get("vendor")
        vendor_string = found if isinstance(found, str) else _model_vendor_string(catalog, catalog_model or name)
    vendor = catalog.vendor_by_string(vendor_string) if vendor_string else None
    cpu = _explicit_cpu(qemu_model, wanted, catalog_bits, qemu_bits, catalog, guest,
                        vendor.name if vendor else guest.vendor)
    return EffectiveCpu(
        qemu_model=qemu_model,
        resolution=resolution,
        features=wanted,
        qemu_features=qemu_bits,
        cpu=cpu,
        vendor_string=vendor_string,
        catalog_model=catalog_model,
        qemu_only_props=tuple(sorted(qemu_only)),
        notes=tuple(notes),
        check_name=check,
        named=on | off,
    )


# -- compare -------------------------------------------------------------------------
@dataclass(frozen=True)
class HypervisorComparison:
    comparison: Comparison
    effective: EffectiveCpu
    #: QEMU's own blockers of the model (catalog names)
    qemu_blockers: list[str]
    #: features the guest needs that this QEMU has no property for
    unknown_to_qemu: list[str]
    accel: str = ""
    #: QEMU's blockers the catalog has no feature for (they block all the same)
    uncatalogued_blockers: list[str] = field(default_factory=list)

    @property
    def result(self) -> CompareResult:
        return self.comparison.result

    def as_dict(self) -> dict[str, object]:
        data = self.comparison.as_dict()
        data.update(
            {
                "accel": self.accel,
                "qemu_model": self.effective.qemu_model,
                "resolution": self.effective.resolution,
                "qemu_blockers": self.qemu_blockers,
                "unknown_to_qemu": self.unknown_to_qemu,
                "uncatalogued_blockers": self.uncatalogued_blockers,
                "notes": list(self.effective.notes),
            }
        )
        return data


def hypervisor_compare(
    guest: CpuDefinition, caps: QemuCaps, catalog: Catalog, *, machine: str | None = None
) -> HypervisorComparison:
    """Can this QEMU (under ``caps.accel``) give ``guest``?  Names every deciding feature.

    ``incompatible``: a feature the guest needs is not in QEMU's offer (or QEMU does not
    know it); ``superset``: QEMU could give more; ``identical``: exactly this.
    """
    eff = effective_cpu(guest, caps, catalog, machine=machine)
    if guest.model and not catalog.has_model(guest.model) and caps.has_model(guest.model):
        lacking = f"the catalog lacks {guest.model}: taken as QEMU {caps.qemu_version} defines it"
        eff = replace(eff, notes=(lacking, *eff.notes))
    offer = offered_bits(caps, catalog)
    known = known_bits(caps, catalog)
    need = eff.features
    unknown = need & ~known if known else 0
    blockers, uncatalogued = (model_blockers(caps, catalog, eff.qemu_model) if eff.qemu_model not in SPECIAL_MODELS
                              else ([], []))
    # QEMU's blockers the catalog has no feature for (Zhaoxin's ace2 with an older cpu_map) still block
    # (KVM's paravirtual leaf, kvmclock and kvm-*, is QEMU's own and read back by name: not counted here)
    uncatalogued = [b for b in uncatalogued if eff.qemu_model != "base" and not b.startswith("kvm")]
    blocker_bits = catalog.bits(blockers) & need
    missing = (need & ~offer) | blocker_bits | unknown
    extra = offer & ~need
    where = f"QEMU {caps.qemu_version} ({caps.accel})"
    if missing or uncatalogued:
        names = [*catalog.names(missing), *uncatalogued]
        comparison = Comparison(
            CompareResult.INCOMPATIBLE, catalog, missing_bits=missing, extra_bits=extra,
            note=f"{where} cannot give {eff.qemu_model}: missing {', '.join(names)}",
        )
    elif extra:
        comparison = Comparison(
            CompareResult.SUPERSET, catalog, extra_bits=extra,
            note=f"{where} can give {eff.qemu_model} and {extra.bit_count()} more features",
        )
    else:
        comparison = Comparison(CompareResult.IDENTICAL, catalog, note=f"{where} gives exactly {eff.qemu_model}")
    return HypervisorComparison(comparison, eff, catalog.names(blocker_bits) + uncatalogued, catalog.names(unknown),
                                caps.accel, uncatalogued)


# -- baseline ------------------------------------------------------------------------
@dataclass(frozen=True)
class HypervisorBaseline:
    #: the baseline CPU: a versioned model with every deviation explicit; always startable
    cpu: CpuDefinition
    qemu_model: str
    features: int
    #: the engine's baseline over the inputs (before QEMU's expansion was applied)
    engine: BaselineResult
    #: features every input has but QEMU cannot give here (left out)
    not_offered: list[str]
    #: features QEMU adds on its own that the result keeps explicitly (hypervisor, x2apic …)
    qemu_added: list[str]
    notes: tuple[str, ...] = ()


def hypervisor_baseline(
    cpus: Sequence[CpuDefinition],
    caps: QemuCaps,
    catalog: Catalog,
    *,
    migratable: bool = True,
    expand: bool = False,
    machine: str | None = None,
    models: Mapping[str, Sequence[str]] | None = None,
    offer: int | None = None,
) -> HypervisorBaseline:
    """The best CPU every input can run that this QEMU can start (``virsh hypervisor-cpu-baseline``).

    ``offer`` replaces what this QEMU offers (``baseline_everywhere`` passes what every
    host of a set offers).

    The common features are restricted to QEMU's offer, decoded among the models this
    QEMU has, then re-expressed against QEMU's own expansion of the chosen versioned
    model: features QEMU adds by itself and can give are kept (and listed), the ones it
    cannot give are disabled, so that ``hypervisor_compare`` of the result is never
    incompatible and a check='full' start of it verifies.
    """
    from guestcpu.qemu.defined import lacking_note, with_qemu_models

    # an input may name a model only this QEMU defines: taken as QEMU defines it
    catalog = with_qemu_models(catalog, caps)
    lacking = [n for n in dict.fromkeys(lacking_note(c.model, catalog) for c in cpus if c.model) if n]
    if offer is None:
        offer = offered_bits(caps, catalog, migratable=migratable)
        known = known_bits(caps, catalog)
        allowed = offer & known if known else offer
    else:
        allowed = offer
    usable_models = dict(models) if models is not None else qemu_models(caps, catalog)
    # QEMU turns a feature off when the one it depends on is off (npt without svm).
    dependencies = dependencies_for(catalog)
    allowed = dependencies.without_orphans(allowed)
    # The inputs' own model may be one this QEMU lacks (EPYC-Rome-v3 on 7.2): choose among QEMU's.
    engine = baseline(cpus, catalog, models=usable_models, allowed_features=allowed, migratable=migratable,
                      dependencies=dependencies, fallback=Fallback.ALLOW)
    common_all = None
    from guestcpu.engine.cpubits import compile_cpu

    for index, cpu in enumerate(cpus):
        bits = compile_cpu(cpu, catalog, f"CPU #{index + 1}").all
        common_all = bits if common_all is None else common_all & bits
    not_offered = catalog.names((common_all or 0) & ~allowed)
    wanted = compile_cpu(engine.cpu, catalog, "baseline").all
    chosen = engine.cpu.model
    assert chosen is not None
    qemu_model, resolution = caps.resolve(chosen, machine)
    entry = caps.model(qemu_model)
    if entry is None or entry.expansion is None:
        raise NotExpressibleError(f"this QEMU has no expansion of {qemu_model}, the baseline's model")
    qemu_bits, _ = expansion_bits(entry.expansion, catalog)
    catalog_bits = catalog.model(qemu_model).features if catalog.has_model(qemu_model) else 0
    added_by_qemu = qemu_bits & ~catalog_bits
    final = (wanted | added_by_qemu) & allowed
    notes: list[str] = list(lacking)
    # a feature whose gate is off would be cleared by QEMU (npt without svm): never required
    kept = dependencies.without_orphans(final)
    if kept != final:
        notes.append("left out because a feature they need is not in the baseline: "
                     + ", ".join(dependencies.explain(final & ~kept, kept, catalog)))
        final = kept
    if qemu_model != chosen:
        notes.append(f"{chosen} resolves to {qemu_model} ({resolution})")
    dropped_qemu = qemu_bits & ~final
    if dropped_qemu & ~wanted & catalog_bits:
        notes.append(
            f"disabled because this QEMU cannot give them here: {', '.join(catalog.names(dropped_qemu & ~allowed))}"
        )
    vendor = engine.cpu.vendor
    cpu = _explicit_cpu(qemu_model, final, catalog_bits, qemu_bits, catalog, engine.cpu, vendor, expand=expand)
    cpu = cpu.with_(fallback=engine.cpu.fallback, check=None)
    return HypervisorBaseline(
        cpu=cpu,
        qemu_model=qemu_model,
        features=final,
        engine=engine,
        not_offered=not_offered,
        qemu_added=catalog.names(added_by_qemu & final),
        notes=tuple(notes),
    )


# -- many hosts ----------------------------------------------------------------------
@dataclass(frozen=True)
class EverywhereBaseline:
    """A baseline that every given QEMU (one per host) can start, and each host's verdict."""

    result: HypervisorBaseline
    #: (host label, the result judged against that host's QEMU)
    verdicts: tuple[tuple[str, HypervisorComparison], ...]


def baseline_everywhere(
    cpus: Sequence[CpuDefinition],
    hosts: Sequence[tuple[str, QemuCaps]],
    catalog: Catalog,
    *,
    migratable: bool = True,
    expand: bool = False,
    machine: str | None = None,
    models: Mapping[str, Sequence[str]] | None = None,
) -> EverywhereBaseline:
    """The best CPU every input can run that every host's QEMU can start.

    Only features every host offers and models every host's QEMU has take part; the
    result is then judged against each host, and a feature some host still cannot give
    (QEMU versions define models differently) is left out and the baseline computed
    again, so that no verdict is incompatible.
    """
    if not hosts:
        raise InputError("a baseline across hosts needs at least one host's capabilities")
    offer = catalog.all_bits
    common_models: dict[str, set[str]] | None = None
    for _, caps in hosts:
        offered = offered_bits(caps, catalog, migratable=migratable)
        known = known_bits(caps, catalog)
        offer &= offered & known if known else offered
        host_models = qemu_models(caps, catalog)
        if common_models is None:
            common_models = {name: set(blockers) for name, blockers in host_models.items()}
        else:
            common_models = {
                name: blockers | set(host_models[name]) for name, blockers in common_models.items()
                if name in host_models
            }
    usable = {name: tuple(sorted(b)) for name, b in (common_models or {}).items()}
    if models is not None:
        usable = {name: usable[name] for name in models if name in usable}
    base_caps = hosts[0][1]
    for _ in range(4):
        result = hypervisor_baseline(cpus, base_caps, catalog, migratable=migratable, expand=expand,
                                     machine=machine, models=usable, offer=offer)
        verdicts = tuple(
            (label, hypervisor_compare(result.cpu, caps, catalog, machine=machine)) for label, caps in hosts
        )
        missing = 0
        for _, verdict in verdicts:
            missing |= verdict.comparison.missing_bits
        if not missing:
            return EverywhereBaseline(result, verdicts)
        offer &= ~missing
    failing = [f"{label}: {v.comparison.reason}" for label, v in verdicts if v.comparison.missing_bits]
    raise IncompatibleError("no baseline that every host's QEMU can start: " + "; ".join(failing))
