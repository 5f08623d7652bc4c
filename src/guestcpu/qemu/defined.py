"""Models the QEMU at hand defines and the catalog does not know, from QEMU's own definition (pure).

What a QEMU defines is a fact of that QEMU (its probe, in its caps), not of the
catalog: a QEMU newer than the catalog's sources (or a catalog made from an older
libvirt cpu_map) has models the catalog lacks.  They are taken as QEMU defines them:
the features of its static expansion, vendor, family/model/stepping and model-id, and
its alias-of.  They are never decode answers (decode stays libvirt's), and every
answer that uses one says that the catalog lacks it.
"""

from __future__ import annotations

from guestcpu.catalog.catalog import Catalog
from guestcpu.model.cpumodel import CpuidIdentity, CpuModel, ModelSignature
from guestcpu.model.names import version_of
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import HOST_MODELS

_SPECIAL = HOST_MODELS | {"base"}


def qemu_only_models(caps: QemuCaps, catalog: Catalog) -> list[str]:
    """Models ``caps``' QEMU defines (with an expansion) that ``catalog`` does not know."""
    return [m.name for m in caps.models
            if m.name not in _SPECIAL and not catalog.has_model(m.name)
            and (m.expansion is not None or (m.alias_of is not None and not catalog.has_model(m.alias_of)))]


def _identity(props: dict[str, object]) -> CpuidIdentity | None:
    values = {k: props.get(k) for k in ("vendor", "family", "model", "stepping", "model-id")}
    if not all(isinstance(values[k], int) for k in ("family", "model", "stepping")):
        return None
    level, xlevel = props.get("min-level", 0), props.get("min-xlevel", 0)
    return CpuidIdentity(
        vendor=str(values["vendor"] or ""), family=int(values["family"]),  # type: ignore[call-overload]
        model=int(values["model"]), stepping=int(values["stepping"]),  # type: ignore[call-overload]
        level=level if isinstance(level, int) else 0, xlevel=xlevel if isinstance(xlevel, int) else 0,
        model_id=str(values["model-id"] or ""),
    )


def with_qemu_models(catalog: Catalog, caps: QemuCaps) -> Catalog:
    """``catalog`` plus every model only ``caps``' QEMU defines (``catalog`` itself when there is none)."""
    missing = qemu_only_models(caps, catalog)
    if not missing:
        return catalog
    from guestcpu.qemu.hypervisor import expansion_bits

    order = max((m.order for m in catalog.models), default=0)
    added: dict[str, CpuModel] = {}
    note = f"defined by QEMU {caps.qemu_version}, not by the catalog"
    for name in missing:
        entry = caps.model(name)
        assert entry is not None
        target = caps.model(entry.alias_of) if entry.alias_of else entry
        if target is None or target.expansion is None:
            continue
        props = dict(target.expansion.props)
        bits, _unknown = expansion_bits(target.expansion, catalog)
        vendor_string = props.get("vendor")
        vendor = catalog.vendor_by_string(vendor_string) if isinstance(vendor_string, str) else None
        identity = _identity(props)
        order += 1
        added[name] = CpuModel(
            name=name, order=order, vendor=vendor.name if vendor else None, features=bits,
            signatures=(ModelSignature(identity.family, identity.model),) if identity else (),
            alias_of=entry.alias_of, version=version_of(target.name), family=target.name.rsplit("-v", 1)[0],
            decode_host=False, decode_guest=False, identity=identity, source=f"QEMU {caps.qemu_version}",
            notes=note,
        )
    # an alias points at its target's catalog entry, so targets come first
    models = [*catalog.models, *sorted(added.values(), key=lambda m: (m.alias_of is not None, m.order))]
    return Catalog(catalog.features, catalog.vendors, tuple(models), f"{catalog.source}+QEMU {caps.qemu_version}")


def lacking_note(name: str, catalog: Catalog) -> str | None:
    """The one note an answer carries when ``name`` comes from QEMU, not from the catalog."""
    if not catalog.has_model(name):
        return None
    model = catalog.model(name)
    if model.source.startswith("QEMU "):
        return f"the catalog lacks {name}: taken as {model.source} defines it"
    return None
