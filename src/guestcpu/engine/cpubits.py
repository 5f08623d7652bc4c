"""A CPU definition compiled to feature bitsets, one per policy.

Everything the engine decides is bit arithmetic on these sets; compiling once and
reusing the result is what makes compare and baseline fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.model.cpu import CpuDefinition, CpuType, Policy
from guestcpu.model.cpumodel import CpuModel


@dataclass(frozen=True)
class CpuBits:
    #: the model's own features (0 without a model)
    model: int
    force: int
    require: int
    optional: int
    disable: int
    forbid: int
    vendor: str | None

    @property
    def all(self) -> int:
        """model + force + require - disable - forbid (libvirt's x86ModelFromCPU(-1))."""
        return (self.model | self.force | self.require) & ~(self.disable | self.forbid)

    @property
    def required_with_model(self) -> int:
        """model + require features (x86ModelFromCPU(REQUIRE))."""
        return self.model | self.require


def model_of(cpu: CpuDefinition, catalog: Catalog, where: str = "") -> CpuModel | None:
    if cpu.model is None:
        return None
    return catalog.model(cpu.model, where)


def compile_cpu(cpu: CpuDefinition, catalog: Catalog, where: str = "") -> CpuBits:
    """Compile ``cpu``; unknown models and features raise ``UnknownNameError``.

    Results are memoised per catalog: fleets compare the same few CPUs many times.
    """
    cache = catalog.compiled_cache
    found = cache.get(cpu)
    if found is None:
        found = _compile(cpu, catalog, where)
        if len(cache) < 65536:
            cache[cpu] = found
    return found


def _compile(cpu: CpuDefinition, catalog: Catalog, where: str) -> CpuBits:
    model = model_of(cpu, catalog, where)
    per_policy = {p: 0 for p in Policy}
    for feature in cpu.features:
        policy = Policy.REQUIRE if cpu.type is CpuType.HOST or feature.policy is None else feature.policy
        per_policy[policy] |= 1 << catalog.feature(feature.name, where).index
    return CpuBits(
        model=model.features if model else 0,
        force=per_policy[Policy.FORCE],
        require=per_policy[Policy.REQUIRE],
        optional=per_policy[Policy.OPTIONAL],
        disable=per_policy[Policy.DISABLE],
        forbid=per_policy[Policy.FORBID],
        vendor=cpu.vendor,
    )


def check_vendor(cpu: CpuDefinition, catalog: Catalog, where: str = "") -> None:
    if cpu.vendor is not None:
        catalog.vendor(cpu.vendor, where)


def require_model(cpu: CpuDefinition, where: str) -> str:
    if cpu.model is None:
        raise InputError(f"{where}: the CPU has no <model>; a model name such as 'Skylake-Client-v4' is needed")
    return cpu.model
