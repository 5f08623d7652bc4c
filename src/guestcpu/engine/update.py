"""Turn a loose guest CPU into a concrete one, and check what QEMU really built.

* ``update``: resolve ``optional`` features against a host CPU, expand ``host-model``
  and ``match='minimum'`` into the host's model + features, list removed model
  features explicitly (libvirt's virCPUUpdate).
* ``translate``: replace a model the hypervisor lacks with the closest one it has,
  keeping the features (``fallback='allow'``).
* ``update_live``: compare the CPU asked for with the features QEMU enabled and
  filtered; with ``check='full'`` any difference is an error naming every feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.cpubits import compile_cpu, require_model
from guestcpu.engine.decode import CpuFacts, decode
from guestcpu.engine.expand import add_feature_if_missing, disable_removed_features, update_feature
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.model.cpu import Check, CpuDefinition, CpuType, Fallback, FeatureRequest, Match, Mode, Policy
from guestcpu.model.cpuid import Signature
from guestcpu.model.features import iter_bits


def _copy_migratable(host: CpuDefinition, catalog: Catalog) -> CpuDefinition:
    keep = tuple(f for f in host.features if not catalog.has_feature(f.name) or catalog.feature(f.name).migratable)
    return host.with_(features=keep)


def update(
    guest: CpuDefinition, host: CpuDefinition | None, catalog: Catalog, *, migratable_host: bool = True,
    removed_policy: Policy = Policy.DISABLE,
) -> CpuDefinition:
    mode = guest.mode or Mode.CUSTOM
    if mode in (Mode.HOST_PASSTHROUGH, Mode.MAXIMUM):
        return guest
    relative = mode is Mode.HOST_MODEL or guest.match is Match.MINIMUM or any(
        f.policy is Policy.OPTIONAL for f in guest.features
    )
    if mode is Mode.CUSTOM and guest.model is None:
        return guest
    if host is not None and migratable_host:
        host = _copy_migratable(host, catalog)
    if relative:
        if host is None or host.model is None:
            raise InputError("this guest CPU needs a host CPU model to be updated against")
        host_all = compile_cpu(host, catalog, "host CPU").all
        features = []
        for f in guest.features:
            if f.policy is Policy.OPTIONAL:
                present = host_all >> catalog.feature(f.name, "guest CPU").index & 1
                f = FeatureRequest(f.name, Policy.REQUIRE if present else Policy.DISABLE)
            features.append(f)
        guest = guest.with_(features=tuple(features))
        if mode is Mode.HOST_MODEL or guest.match is Match.MINIMUM:
            guest = _update_host_model(guest, host)
    catalog.model(require_model(guest, "guest CPU"), "guest CPU")
    return _add_removed(guest, catalog, removed_policy)


def _add_removed(cpu: CpuDefinition, catalog: Catalog, policy: Policy) -> CpuDefinition:
    if policy is Policy.DISABLE:
        return disable_removed_features(cpu, catalog)
    model = catalog.model(require_model(cpu, "CPU"))
    features = list(cpu.features)
    for i in iter_bits(model.removed):
        add_feature_if_missing(features, catalog.features[i].name, policy)
    return cpu.with_(features=tuple(features))


def _update_host_model(guest: CpuDefinition, host: CpuDefinition) -> CpuDefinition:
    features = [FeatureRequest(f.name, f.policy if f.policy is not None else Policy.REQUIRE) for f in host.features]
    for f in guest.features:
        update_feature(features, f.name, f.policy)
    keep_vendor = (guest.mode or Mode.CUSTOM) is Mode.CUSTOM
    return guest.with_(
        mode=Mode.CUSTOM,
        match=Match.EXACT,
        model=host.model,
        fallback=guest.fallback or Fallback.ALLOW,
        vendor=guest.vendor if keep_vendor else host.vendor,
        vendor_id=guest.vendor_id if (keep_vendor or guest.vendor_id) else host.vendor_id,
        features=tuple(features),
    )


def model_allowed(name: str | None, models: Mapping[str, Sequence[str]] | None) -> bool:
    return models is None or (name is not None and name in models)


def translate(cpu: CpuDefinition, catalog: Catalog, models: Mapping[str, Sequence[str]] | None) -> CpuDefinition:
    """Swap an unsupported model for the closest supported one (libvirt's virCPUTranslate)."""
    if cpu.mode in (Mode.HOST_MODEL, Mode.HOST_PASSTHROUGH, Mode.MAXIMUM):
        return cpu
    if model_allowed(cpu.model, models):
        return cpu
    if (cpu.fallback or Fallback.ALLOW) is not Fallback.ALLOW:
        raise GuestCpuError(
            f"CPU model {cpu.model} is not supported by the hypervisor and fallback='forbid' keeps it; "
            f"supported models: {', '.join(sorted(models or {}))}"
        )
    name = require_model(cpu, "guest CPU")
    model = catalog.model(name, "guest CPU")
    bits = compile_cpu(cpu, catalog, "guest CPU").all
    signature_eax = 0
    if model.signatures:
        sig = model.signatures[0]
        first_stepping = (sig.steppings & -sig.steppings).bit_length() - 1 if sig.steppings else 0
        signature_eax = Signature(sig.family, sig.model, first_stepping).to_eax()
    result = decode(
        CpuFacts(bits, model.vendor, signature_eax),
        catalog,
        CpuType.GUEST,
        models=models,
    )
    features = list(result.cpu.features)
    for f in cpu.features:
        update_feature(features, f.name, f.policy)
    return cpu.with_(model=result.model.name, features=tuple(features))


@dataclass(frozen=True)
class LiveCheck:
    cpu: CpuDefinition
    extra: list[str]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.extra and not self.missing


class CpuMismatchError(GuestCpuError):
    """QEMU built a different CPU than the definition asked for."""

    exit_status = 2

    def __init__(self, extra: list[str], missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        parts = []
        if extra:
            parts.append(f"extra features: {', '.join(extra)}")
        if missing:
            parts.append(f"missing features: {', '.join(missing)}")
        super().__init__("guest CPU doesn't match specification: " + ", ".join(parts))


def update_live(cpu: CpuDefinition, enabled: int, disabled: int, catalog: Catalog) -> LiveCheck:
    """Reconcile ``cpu`` with what QEMU enabled and filtered (libvirt's virCPUx86UpdateLive).

    With ``check='full'`` every difference is collected and returned in ``extra`` and
    ``missing`` (the caller refuses to run); otherwise the definition is updated to
    what the vCPU really has.
    """
    passthrough = cpu.mode in (Mode.HOST_PASSTHROUGH, Mode.MAXIMUM)
    bits = compile_cpu(cpu, catalog, "guest CPU")
    expected_on = bits.all
    explicitly_off = bits.disable
    model = catalog.find_model(cpu.model) if cpu.model else None
    named = {f.name for f in cpu.features}
    full = cpu.check is Check.FULL
    features = list(cpu.features)
    extra: list[str] = []
    missing: list[str] = []
    for feature in catalog.features:
        bit = 1 << feature.index
        if expected_on & bit:
            expected: Policy | None = Policy.REQUIRE
        elif not passthrough or explicitly_off & bit:
            expected = Policy.DISABLE
        else:
            expected = None
        # Features QEMU always turns on that libvirt learnt of later are not a mismatch.
        ignore = model is not None and bool(model.added & bit) and feature.name not in named
        if expected is Policy.DISABLE and enabled & bit:
            if full and not ignore:
                extra.append(feature.name)
            elif not full:
                update_feature(features, feature.name, Policy.REQUIRE)
        if disabled & bit or (expected is Policy.REQUIRE and not enabled & bit):
            if full and not ignore:
                missing.append(feature.name)
            elif not full:
                update_feature(features, feature.name, Policy.DISABLE)
    updated = cpu.with_(features=tuple(features))
    if model is not None:
        updated = disable_removed_features(updated, catalog)
    return LiveCheck(updated, extra, missing)


def host_model_to_guest(host_model: CpuDefinition) -> CpuDefinition:
    """A host-model ``<cpu>`` as the custom guest CPU it stands for."""
    return host_model.with_(type=CpuType.GUEST, mode=Mode.CUSTOM, match=Match.EXACT)
