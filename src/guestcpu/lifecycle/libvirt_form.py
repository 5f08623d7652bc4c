"""The pin as libvirt's live ``<cpu>``: what libvirt writes after a verified start (pure).

A custom pin becomes ``<cpu mode='custom' match='exact' check='full'>`` with the
versioned model, ``fallback='forbid'``, the vendor pinned through ``vendor_id`` and
every feature the catalog names listed as ``require`` or ``disable`` (libvirt's
order: by name).  QEMU-only properties (KVM paravirt flags ...) have no libvirt
``<feature>`` name; the pin JSON keeps them.  host-passthrough and maximum stay
what they are in libvirt, with ``check='full'``.
"""

from __future__ import annotations

from guestcpu.catalog.catalog import Catalog
from guestcpu.formats.libvirt_xml import format_cpu
from guestcpu.lifecycle.abi import topology_of
from guestcpu.lifecycle.pin import Abi
from guestcpu.model.cpu import Check, CpuDefinition, Fallback, FeatureRequest, Match, Mode, Policy


def libvirt_cpu(abi: Abi, catalog: Catalog) -> CpuDefinition:
    topology = topology_of(abi)
    if abi.mode == "host-passthrough":
        return CpuDefinition(mode=Mode.HOST_PASSTHROUGH, check=Check.FULL, migratable="on", topology=topology)
    if abi.mode == "maximum":
        return CpuDefinition(mode=Mode.MAXIMUM, check=Check.FULL, migratable="on", topology=topology)
    features = []
    for name, on in abi.features.items():
        if catalog.has_feature(name):
            features.append(FeatureRequest(catalog.feature(name).name, Policy.REQUIRE if on else Policy.DISABLE))
    vendor_id = abi.vendor if len(abi.vendor) == 12 and "," not in abi.vendor else None
    return CpuDefinition(
        mode=Mode.CUSTOM,
        match=Match.EXACT,
        check=Check.FULL,
        model=abi.model,
        fallback=Fallback.FORBID,
        vendor_id=vendor_id,
        topology=topology,
        features=tuple(sorted(features, key=lambda f: f.name)),
    )


def libvirt_xml(abi: Abi, catalog: Catalog) -> str:
    return format_cpu(libvirt_cpu(abi, catalog))
