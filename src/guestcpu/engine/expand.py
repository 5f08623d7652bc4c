"""Expand a CPU so that every feature of its model is listed explicitly.

A guest definition that lists every feature does not depend on what a model name
means in some catalog or QEMU version: the first step of pinning a stable ABI.
"""

from __future__ import annotations

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.cpubits import require_model
from guestcpu.model.cpu import CpuDefinition, CpuType, FeatureRequest, Policy
from guestcpu.model.features import iter_bits


def update_feature(features: list[FeatureRequest], name: str, policy: Policy | None) -> None:
    """Set ``name``'s policy, appending it if absent (libvirt's virCPUDefUpdateFeature)."""
    for i, feature in enumerate(features):
        if feature.name == name:
            features[i] = FeatureRequest(name, policy)
            return
    features.append(FeatureRequest(name, policy))


def add_feature_if_missing(features: list[FeatureRequest], name: str, policy: Policy) -> None:
    if all(f.name != name for f in features):
        features.append(FeatureRequest(name, policy))


def disable_removed_features(cpu: CpuDefinition, catalog: Catalog) -> CpuDefinition:
    """List the model's removed features as disabled unless the CPU already names them."""
    model = catalog.model(require_model(cpu, "CPU"))
    if not model.removed:
        return cpu
    features = list(cpu.features)
    for i in iter_bits(model.removed):
        add_feature_if_missing(features, catalog.features[i].name, Policy.DISABLE)
    return cpu.with_(features=tuple(features))


def expand_features(cpu: CpuDefinition, catalog: Catalog) -> CpuDefinition:
    """Every model feature explicit; the CPU's own require/disable entries kept on top."""
    model = catalog.model(require_model(cpu, "CPU"), "CPU")
    host = cpu.type is CpuType.HOST
    features = [
        FeatureRequest(catalog.features[i].name, None if host else Policy.REQUIRE) for i in iter_bits(model.features)
    ]
    for feature in cpu.features:
        if not host and feature.policy not in (Policy.REQUIRE, Policy.DISABLE):
            continue
        update_feature(features, feature.name, feature.policy)
    expanded = cpu.with_(features=tuple(features))
    if not host:
        expanded = disable_removed_features(expanded, catalog)
    # libvirt lists an expanded CPU's features by name.
    return expanded.with_(features=tuple(sorted(expanded.features, key=lambda f: f.name)))
