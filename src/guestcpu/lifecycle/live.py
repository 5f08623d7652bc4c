"""Read back the CPU a running (paused) QEMU really built, and hold it against the pin.

QEMU is never trusted to have given what was asked: it silently drops features the
accelerator lacks (``check=on`` only warns).  After launch, every pinned property of
the first vCPU is read with ``qom-get`` (pipelined: ~0.1 s for 330 properties), plus
``unavailable-features``, QEMU's list of what it filtered.  The comparison is
libvirt's ``check='full'`` (``engine.update.update_live``) over the catalog features,
and a plain comparison for QEMU-only features and the identity properties.

This is the only readback: ``run`` pins its loose definition in memory first, so every
launch is held against a pin, identity (vendor, family/model/stepping, level, xlevel,
model-id) included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.update import CpuMismatchError, update_live
from guestcpu.errors import GuestCpuError
from guestcpu.formats.qmp_replies import parse_cpus_fast, qom_bool, qom_names, qom_scalar
from guestcpu.lifecycle.abi import ABI_PROPS, topology_given
from guestcpu.lifecycle.pin import Abi
from guestcpu.model.cpu import Check, CpuDefinition, FeatureRequest, Mode, Policy
from guestcpu.qemu.process import QemuProcess

#: pin field -> QOM property of the vCPU
IDENTITY = {
    "vendor": "vendor",
    "family": "family",
    "model_number": "model",
    "stepping": "stepping",
    "level": "level",
    "xlevel": "xlevel",
    "model_id": "model-id",
}


@dataclass(frozen=True)
class LiveCpu:
    """What one vCPU has: feature -> enabled, identity and ABI properties, and what QEMU filtered."""

    qom_path: str
    features: Mapping[str, bool]
    identity: Mapping[str, Any]
    props: Mapping[str, Any]
    unavailable: tuple[str, ...] = ()
    vcpus: int = 1


@dataclass(frozen=True)
class LiveMismatch:
    extra: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: identity or property differences, "name: pinned X, live Y"
    other: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.extra or self.missing or self.other)


class PinMismatchError(CpuMismatchError):
    """The vCPU QEMU built differs from the pin; every difference is named (exit status 2)."""

    def __init__(self, mismatch: LiveMismatch, where: str = "", *, launched: bool = True) -> None:
        super().__init__(mismatch.extra, mismatch.missing)
        self.mismatch = mismatch
        message = str(self.args[0]) if (mismatch.extra or mismatch.missing) else "guest CPU doesn't match specification"
        if mismatch.other:
            message += ("; " if (mismatch.extra or mismatch.missing) else ": ") + "; ".join(mismatch.other)
        if where:
            message += f" ({where}); " + ("the guest was stopped" if launched else "QEMU was not started")
        self.args = (message,)


async def read_live(qemu: QemuProcess, abi: Abi, known: Iterable[str] | None = None) -> LiveCpu:
    """Every pinned property of the first vCPU of a running QEMU.

    ``known``: the features this QEMU has.  A feature the pin has off and this QEMU does
    not know (a pin made on a newer QEMU) is off here by construction and is not read.
    """
    cpus = parse_cpus_fast(await qemu.execute("query-cpus-fast"))
    if not cpus:
        raise GuestCpuError("QEMU reports no vCPU to read back (query-cpus-fast is empty)")
    path = cpus[0].qom_path
    names_known = set(known) if known is not None else None
    features = sorted(name for name, on in abi.features.items() if on or names_known is None or name in names_known)
    identity = list(IDENTITY.values())
    props = [key for key in ABI_PROPS if key in abi.props]
    names = [*features, *identity, *props, "unavailable-features"]
    values = await qemu.execute_many(("qom-get", {"path": path, "property": name}) for name in names)
    got = dict(zip(names, values, strict=True))
    return LiveCpu(
        qom_path=path,
        features={name: qom_bool(got[name], name) for name in features},
        identity={name: qom_scalar(got[name], name) for name in identity},
        props={name: qom_scalar(got[name], name) for name in props},
        unavailable=qom_names(got["unavailable-features"], "unavailable-features"),
        vcpus=len(cpus),
    )


def compare_live(abi: Abi, live: LiveCpu, catalog: Catalog) -> LiveMismatch:
    """Differences between the pin and the live vCPU (libvirt check='full' semantics)."""
    catalog_features: list[FeatureRequest] = []
    #: catalog name -> the pin's (QEMU) name, so every message speaks the pin's language
    pin_name: dict[str, str] = {}
    enabled = disabled = 0
    qemu_only_extra: list[str] = []
    qemu_only_missing: list[str] = []
    derived = topology_given(abi.topology, abi.vendor)
    for name, pinned in sorted(abi.features.items()):
        if name in derived or (name not in live.features and not pinned):
            # from the topology (every release gives the guest these bits; not all show them),
            # or unknown to this QEMU and off in the pin
            continue
        on = live.features.get(name, False)
        if catalog.has_feature(name):
            feature = catalog.feature(name)
            pin_name[feature.name] = name
            catalog_features.append(FeatureRequest(feature.name, Policy.REQUIRE if pinned else Policy.DISABLE))
            if on:
                enabled |= 1 << feature.index
        elif on and not pinned:
            qemu_only_extra.append(name)
        elif pinned and not on:
            qemu_only_missing.append(name)
    for name in live.unavailable:
        if catalog.has_feature(name) and name not in derived:
            disabled |= 1 << catalog.feature(name).index
    # No model: every feature is explicit, so the pin alone says what is expected.
    cpu = CpuDefinition(mode=Mode.CUSTOM, check=Check.FULL, features=tuple(catalog_features))
    check = update_live(cpu, enabled, disabled, catalog)
    other = []
    for field_name, prop in IDENTITY.items():
        pinned_value = getattr(abi, field_name)
        if live.identity.get(prop) != pinned_value:
            other.append(f"{prop}: pinned {pinned_value!r}, live {live.identity.get(prop)!r}")
    for key, value in live.props.items():
        if abi.props.get(key) != value:
            other.append(f"{key}: pinned {abi.props.get(key)!r}, live {value!r}")
    if live.vcpus != abi.vcpus:
        other.append(f"vCPUs: pinned {abi.vcpus}, live {live.vcpus}")
    return LiveMismatch(
        extra=sorted([pin_name.get(n, n) for n in check.extra] + qemu_only_extra),
        missing=sorted([pin_name.get(n, n) for n in check.missing] + qemu_only_missing),
        other=other,
    )
