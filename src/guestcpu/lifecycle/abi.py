"""Turn QEMU's expansion of the requested CPU on the guest's machine type into the ABI (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guestcpu.errors import InputError
from guestcpu.lifecycle.pin import DEFAULT_TOPOLOGY, Abi
from guestcpu.model.cpu import Topology
from guestcpu.qemu.machine import Expanded

#: Guest-visible properties a machine type's compatibility settings change, beyond the
#: features (cache layout, extended topology leaf, vendor-specific leaves, PMU).
#: ``phys-bits`` is left out: QEMU reports 0 before realize and the real width after.
ABI_PROPS = ("xlevel2", "legacy-cache", "l3-cache", "cpuid-0xb", "x-vendor-cpuid-only", "pmu")
#: For host-passthrough/maximum the user's own feature requests, applied on top of host/max.
REQUESTED_KEY = "requested-features"


def _int(props: Mapping[str, Any], key: str, model: str) -> int:
    value = props.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"QEMU's expansion of {model} has no integer '{key}'")
    return value


def _str(props: Mapping[str, Any], key: str, model: str) -> str:
    value = props.get(key)
    if not isinstance(value, str):
        raise InputError(f"QEMU's expansion of {model} has no '{key}'")
    return value


def build_abi(
    expanded: Expanded,
    *,
    arch: str,
    accel: str,
    machine: str,
    mode: str,
    version: int | str | None,
    requested_features: Mapping[str, bool] | None = None,
    topology: Topology | None = None,
    topology_features: frozenset[str] = frozenset(),
) -> Abi:
    """``topology_features``: what the guest gets from its topology (``topology_given``)."""
    static, full, model = expanded.static, expanded.full, expanded.model
    features = {name: value for name, value in static.items() if isinstance(value, bool)}
    for name in topology_features:
        if name in features:
            features[name] = True
    props: dict[str, Any] = {key: full[key] for key in ABI_PROPS if key in full}
    if mode != "custom" and requested_features:
        props[REQUESTED_KEY] = dict(sorted(requested_features.items()))
    return Abi(
        arch=arch,
        accel=accel,
        machine=machine,
        mode=mode,
        model=model,
        version=version,
        vendor=_str(static, "vendor", model),
        family=_int(static, "family", model),
        model_number=_int(static, "model", model),
        stepping=_int(static, "stepping", model),
        level=_int(full, "level", model),
        xlevel=_int(full, "xlevel", model),
        model_id=_str(static, "model-id", model),
        features=features,
        props=props,
        topology=topology_json(topology),
    )


#: Features QEMU derives from the topology: when a socket has several logical CPUs the
#: guest's CPUID has ``ht`` (leaf 1) and, for every vendor but Intel, ``cmp-legacy``
#: (leaf 0x80000001), whatever ``-cpu`` says.  QEMU 7.2 sets them only when the guest reads
#: CPUID (its vCPU's feature words show them off, and under TCG even a ``+ht`` is
#: filtered); QEMU 10 shows them on.  The guest sees the same bits on both, so the pin
#: records them on and the readback does not hold the vCPU's report of them against it.
TOPOLOGY_FEATURES = frozenset({"ht", "cmp-legacy"})


def logical_per_socket(topology: Mapping[str, int]) -> int:
    return (topology.get("dies", 1) * topology.get("clusters", 1) * topology.get("cores", 1)
            * topology.get("threads", 1))


def topology_given(topology: Mapping[str, int], vendor: str) -> frozenset[str]:
    """Features the guest's CPUID has because of its topology (empty for one logical CPU per socket)."""
    if logical_per_socket(topology) <= 1:
        return frozenset()
    return frozenset({"ht"} if vendor == "GenuineIntel" else {"ht", "cmp-legacy"})


def topology_json(topology: Topology | None) -> dict[str, int]:
    if topology is None:
        return dict(DEFAULT_TOPOLOGY)
    return {
        "sockets": topology.sockets,
        "dies": topology.dies or 1,
        "clusters": topology.clusters or 1,
        "cores": topology.cores,
        "threads": topology.threads,
    }


def topology_of(abi: Abi) -> Topology:
    """The pin's topology as ``-smp`` takes it (dies and clusters only when not 1: x86 QEMU 7.2 has no clusters)."""
    t = abi.topology
    return Topology(
        sockets=t["sockets"],
        cores=t["cores"],
        threads=t["threads"],
        dies=t["dies"] if t["dies"] != 1 else None,
        clusters=t["clusters"] if t["clusters"] != 1 else None,
    )
