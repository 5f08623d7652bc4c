"""The catalog: every known feature and CPU model, indexed for the engine.

A ``Catalog`` is immutable once built.  Loading it from files is ``catalog.loader``'s
job; this module only indexes and answers look-ups, with exact errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestcpu.errors import UnknownNameError
from guestcpu.model.cpuid import REGISTERS, CpuidData
from guestcpu.model.cpumodel import CpuModel
from guestcpu.model.features import Feature, FeatureSet, iter_bits


def normalize_feature_name(name: str) -> str:
    """QEMU accepts ``sse4.1``, ``sse4_1`` and ``sse4-1`` alike; so do we."""
    return name.lower().replace("_", "-").replace(".", "-")


@dataclass(frozen=True)
class Vendor:
    name: str
    string: str


@dataclass
class Catalog:
    features: tuple[Feature, ...]
    vendors: tuple[Vendor, ...]
    models: tuple[CpuModel, ...]
    source: str = "built-in"
    _feature_index: dict[str, Feature] = field(default_factory=dict, repr=False)
    _model_index: dict[str, CpuModel] = field(default_factory=dict, repr=False)
    _lower_model_index: dict[str, CpuModel] = field(default_factory=dict, repr=False)
    #: (leaf, subleaf, register index) -> [(mask, feature bit)]
    _cpuid_lookup: dict[tuple[int, int, int], list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _msr_lookup: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    #: engine memo of compiled CPU definitions (engine.cpubits); owned by this catalog
    compiled_cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for feature in self.features:
            for spelling in (feature.name, *feature.qemu_names):
                self._feature_index.setdefault(spelling, feature)
                self._feature_index.setdefault(normalize_feature_name(spelling), feature)
            if feature.kind == "msr":
                self._msr_lookup.setdefault(feature.leaf, []).append((1 << feature.bit, 1 << feature.index))
            else:
                key = (feature.leaf, feature.subleaf, REGISTERS.index(feature.register))
                self._cpuid_lookup.setdefault(key, []).append((1 << feature.bit, 1 << feature.index))
        self.models = tuple(sorted(self.models, key=lambda m: m.order))
        for model in self.models:
            self._model_index[model.name] = model
            self._lower_model_index[model.name.lower()] = model
        self.all_bits = (1 << len(self.features)) - 1
        self.migratable_bits = sum(1 << f.index for f in self.features if f.migratable)

    # -- features -----------------------------------------------------------------
    def feature(self, name: str, where: str = "") -> Feature:
        found = self._feature_index.get(name) or self._feature_index.get(normalize_feature_name(name))
        if found is None:
            raise UnknownNameError("feature", name, (f.name for f in self.features), where)
        return found

    def has_feature(self, name: str) -> bool:
        return (name in self._feature_index) or (normalize_feature_name(name) in self._feature_index)

    def bits(self, names: Iterable[str], where: str = "") -> int:
        value = 0
        for name in names:
            value |= 1 << self.feature(name, where).index
        return value

    def names(self, bits: int) -> list[str]:
        """Feature names of ``bits`` in catalog order."""
        return [self.features[i].name for i in iter_bits(bits)]

    def feature_set(self, bits: int) -> FeatureSet:
        return FeatureSet(bits, self.features)

    def features_from_cpuid(self, data: CpuidData) -> int:
        """The catalog features whose bits are set in ``data``."""
        value = 0
        for (leaf, subleaf), regs in data.leaves.items():
            for reg_index, reg_value in enumerate(regs):
                if not reg_value:
                    continue
                for mask, bit in self._cpuid_lookup.get((leaf, subleaf, reg_index), ()):
                    if reg_value & mask:
                        value |= bit
        for index, msr_value in data.msrs.items():
            for mask, bit in self._msr_lookup.get(index, ()):
                if msr_value & mask:
                    value |= bit
        return value

    # -- vendors ------------------------------------------------------------------
    def vendor_by_string(self, string: str) -> Vendor | None:
        return next((v for v in self.vendors if v.string == string), None)

    def vendor(self, name: str, where: str = "") -> Vendor:
        found = next((v for v in self.vendors if v.name == name), None)
        if found is None:
            raise UnknownNameError("vendor", name, (v.name for v in self.vendors), where)
        return found

    # -- models -------------------------------------------------------------------
    def model(self, name: str, where: str = "") -> CpuModel:
        found = self._model_index.get(name)
        if found is None:
            raise UnknownNameError("model", name, self._model_index, where)
        return found

    def find_model(self, name: str) -> CpuModel | None:
        return self._model_index.get(name)

    def has_model(self, name: str) -> bool:
        return name in self._model_index

    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def versions(self, family: str) -> list[CpuModel]:
        """The versioned models of a family, oldest first."""
        found = [m for m in self.models if m.family == family and m.version is not None and m.alias_of is None]
        return sorted(found, key=lambda m: m.version or 0)

    def aliases_of(self, canonical: str) -> list[str]:
        return [m.name for m in self.models if m.alias_of == canonical]

    def latest_version(self, name: str) -> CpuModel:
        """The newest version of ``name``'s family (the model itself if it has no versions)."""
        model = self.model(name)
        versions = self.versions(model.family)
        return versions[-1] if versions else model

    def restricted_to(self, names: Sequence[str]) -> list[CpuModel]:
        wanted = set(names)
        return [m for m in self.models if m.name in wanted]
