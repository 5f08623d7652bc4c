"""The ``-cpu`` argument for a fully specified guest CPU (pure).

* a named model: ``Model-vN`` (never a bare alias) with ``+feature``/``-feature``
  for every difference between what the guest must get and QEMU's own expansion of
  that model under the accelerator, and an explicit ``vendor=`` under KVM (QEMU
  otherwise gives every named model the host's vendor);
* a model this QEMU lacks: ``base`` with vendor, family, model, stepping, level,
  xlevel and every feature explicit (impossible for models with their own cache
  topology; ``hypervisor.effective_cpu`` says why);
* a ``model-id`` containing commas cannot be given in ``-cpu`` (QEMU splits it on
  commas without escaping), so it goes through ``-global`` where ``,,`` escapes a comma.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guestcpu.catalog.catalog import Catalog
from guestcpu.model.features import Feature, iter_bits
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.hypervisor import EffectiveCpu, NotExpressibleError, known_bits


@dataclass(frozen=True)
class CpuArgs:
    cpu: str
    #: values of ``-global`` options (``driver=…,property=…,value=…``)
    globals: tuple[str, ...] = ()
    qemu_model: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def argv(self) -> list[str]:
        args = ["-cpu", self.cpu]
        for value in self.globals:
            args += ["-global", value]
        return args

    def as_dict(self) -> dict[str, object]:
        return {"cpu": self.cpu, "globals": list(self.globals), "argv": self.argv, "qemu_model": self.qemu_model,
                "notes": list(self.notes)}


def qemu_feature_name(feature: Feature, caps: QemuCaps) -> str:
    """The spelling this QEMU knows for ``feature``; NotExpressibleError if it knows none."""
    candidates = [*feature.qemu_names, feature.name]
    if not caps.known_props:
        return feature.qemu_name
    for name in candidates:
        for spelling in (name, name.replace("_", "-"), name.replace(".", "_"), name.replace("-", "_")):
            if spelling in caps.known_props:
                return spelling
    raise NotExpressibleError(
        f"QEMU {caps.qemu_version} has no property for CPU feature '{feature.name}' ({feature.location}); "
        "a newer QEMU is needed, or disable the feature"
    )


def _typename(caps: QemuCaps, model: str) -> str:
    entry = caps.model(model)
    if entry is not None and entry.typename:
        return entry.typename
    return f"{model}-{caps.arch}-cpu"


def _global_model_id(typename: str, model_id: str) -> str:
    return f"driver={typename},property=model-id,value={model_id.replace(',', ',,')}"


def cpu_args(eff: EffectiveCpu, caps: QemuCaps, catalog: Catalog) -> CpuArgs:
    """The ``-cpu`` (and ``-global``) arguments that give exactly ``eff`` on this QEMU."""
    if eff.qemu_model in ("host", "max"):
        parts = [eff.qemu_model]
        plus = eff.features & ~eff.qemu_features
        minus = eff.qemu_features & ~eff.features
        parts += [f"+{qemu_feature_name(catalog.features[i], caps)}" for i in iter_bits(plus)]
        parts += [f"-{qemu_feature_name(catalog.features[i], caps)}" for i in iter_bits(minus)]
        return CpuArgs(",".join(parts), (), eff.qemu_model, eff.notes)
    globals_: list[str] = []
    if eff.qemu_model == "base":
        identity = eff.base_identity
        assert identity is not None
        typename = _typename(caps, "base")
        parts = [
            "base",
            f"vendor={eff.vendor_string or identity.vendor}",
            f"family={identity.family}",
            f"model={identity.model}",
            f"stepping={identity.stepping}",
        ]
        if identity.level:
            parts += [f"level={identity.level}", f"xlevel={identity.xlevel}"]
        parts += [f"+{qemu_feature_name(catalog.features[i], caps)}" for i in iter_bits(eff.features)]
        if "," in identity.model_id:
            globals_.append(_global_model_id(typename, identity.model_id))
        else:
            parts.append(f"model-id={identity.model_id}")
        return CpuArgs(",".join(parts), tuple(globals_), "base", eff.notes)
    parts = [eff.qemu_model]
    if eff.vendor_string and (caps.accel == "kvm" or eff.cpu.vendor_id):
        if "," in eff.vendor_string:
            raise NotExpressibleError(f"vendor '{eff.vendor_string}' contains a comma, which -cpu cannot carry")
        parts.append(f"vendor={eff.vendor_string}")
    # Every difference from QEMU's model, and every feature the guest names itself even
    # where it agrees: an old machine type's compatibility properties may flip it.
    named_known = eff.named & known_bits(caps, catalog) if caps.known_props else eff.named
    plus = eff.features & (~eff.qemu_features | named_known)
    minus = ~eff.features & (eff.qemu_features | named_known)
    parts += [f"+{qemu_feature_name(catalog.features[i], caps)}" for i in iter_bits(plus)]
    parts += [f"-{qemu_feature_name(catalog.features[i], caps)}" for i in iter_bits(minus)]
    return CpuArgs(",".join(parts), tuple(globals_), eff.qemu_model, eff.notes)
