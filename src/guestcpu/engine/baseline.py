"""Baseline: the best CPU that every one of N CPUs can run.

As libvirt's virCPUx86Baseline: AND every input's full feature set, require one
vendor, then decode the common set as a guest CPU, preferring the inputs' own model
names.  Options: expand every feature (``expand``), migratable features only, and a
restriction to given models (e.g. what a QEMU offers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.dependencies import FeatureDependencies
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.engine.decode import CpuFacts, DecodeResult, decode
from guestcpu.engine.expand import expand_features
from guestcpu.errors import IncompatibleError, InputError
from guestcpu.model.cpu import CpuDefinition, CpuType, Fallback


@dataclass(frozen=True)
class BaselineResult:
    cpu: CpuDefinition
    decode: DecodeResult
    #: features some inputs have and the baseline lacks (they decided what was dropped)
    dropped_features: list[str]


def baseline(
    cpus: Sequence[CpuDefinition],
    catalog: Catalog,
    *,
    expand: bool = False,
    migratable: bool = False,
    models: Mapping[str, Sequence[str]] | None = None,
    allowed_features: int | None = None,
    dependencies: FeatureDependencies | None = None,
    fallback: Fallback | None = None,
) -> BaselineResult:
    """The best CPU every one of ``cpus`` can run.

    ``dependencies``: leave out features whose parent the common set lacks (QEMU would
    turn them off: what a CPU for a hypervisor needs; libvirt's plain baseline keeps
    them).  ``fallback=Fallback.ALLOW`` lets the inputs' own model give way to one of
    ``models`` instead of failing when the hypervisor lacks it.
    """
    if not cpus:
        raise InputError("baseline needs at least one CPU")
    vendor_name: str | None = None
    output_vendor = True
    model_names: list[str] = []
    common: int | None = None
    union = 0
    for index, cpu in enumerate(cpus):
        where = f"CPU #{index + 1}"
        bits = compile_cpu(cpu, catalog, where)
        model = catalog.model(cpu.model, where) if cpu.model else None
        if cpu.model and cpu.model not in model_names:
            model_names.append(cpu.model)
        if index == 0:
            if cpu.vendor is None:
                output_vendor = False
            else:
                vendor_name = catalog.vendor(cpu.vendor, where).name
        else:
            if cpu.vendor and model and model.vendor and cpu.vendor != model.vendor:
                raise IncompatibleError(
                    f"{where}: CPU vendor {model.vendor} of model {model.name} differs from vendor {cpu.vendor}"
                )
            this_vendor = cpu.vendor
            if this_vendor is None:
                output_vendor = False
                this_vendor = model.vendor if model else None
            if this_vendor is not None:
                if vendor_name is None:
                    vendor_name = catalog.vendor(this_vendor, where).name
                elif vendor_name != this_vendor:
                    raise IncompatibleError(
                        f"CPU vendors do not match: {vendor_name} and {this_vendor} ({where}); "
                        "a baseline needs CPUs of one vendor"
                    )
        all_bits = bits.all
        union |= all_bits
        common = all_bits if common is None else common & all_bits
    assert common is not None
    if allowed_features is not None:
        common &= allowed_features
    if dependencies is not None:
        common = dependencies.without_orphans(common)
    if not common:
        raise IncompatibleError("CPUs are incompatible: they have no feature in common")

    result = decode(
        CpuFacts(common, vendor_name, 0),
        catalog,
        CpuType.GUEST,
        models=models,
        preferred=model_names,
        migratable=migratable,
        fallback=fallback,
    )
    only_input_model = len(model_names) == 1 and result.model.name == model_names[0]
    cpu = result.cpu.with_(fallback=Fallback.FORBID if only_input_model else Fallback.ALLOW)
    if not output_vendor:
        cpu = cpu.with_(vendor=None)
    if expand:
        cpu = expand_features(cpu, catalog)
    return BaselineResult(cpu, result, catalog.names(union & ~common))
