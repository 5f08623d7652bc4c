"""Build a ``Catalog`` from files: the built-in data, admin drop-ins, or a libvirt cpu_map.

Drop-in directories, read in this order (later files override earlier ones):
``/etc/guestcpu/models.d/`` then ``$XDG_CONFIG_HOME/guestcpu/models.d/``.  Each
``*.json`` or ``*.toml`` file holds ``model`` entries; see docs/catalog.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from guestcpu.catalog.catalog import Catalog, Vendor
from guestcpu.catalog.paths import default_dropin_dirs as default_dropin_dirs  # re-exported
from guestcpu.catalog.paths import trusted_dropin_dirs
from guestcpu.errors import InputError, UnknownNameError
from guestcpu.model.cpumodel import CpuidIdentity, CpuModel, ModelSignature, QemuReleases
from guestcpu.model.features import Feature

SCHEMA = 1
_DROPIN_ORDER_BASE = 100_000


#: CPUID's stepping field is 4 bits; family (base + extended) at most 15 + 255; model 8 bits.
MAX_STEPPING = 15
MAX_FAMILY = 15 + 255
MAX_MODEL = 255


def parse_steppings(text: str | None, where: str = "") -> int | None:
    """libvirt's stepping list ``'0-3,5'`` as a bitmap; each range is checked before it is expanded."""
    if not text:
        return None
    place = f"{where}: " if where else ""
    bitmap = 0
    for part in str(text).split(","):
        lo_text, dash, hi_text = part.strip().partition("-")
        if not lo_text.isdigit() or (dash and not hi_text.isdigit()):
            raise InputError(f"{place}stepping '{text[:40]}' is not a list of steppings; expected e.g. '0-3,5'")
        # Digits are counted before int(): a 5000-digit number is refused without being converted.
        too_long = len(lo_text) > 3 or len(hi_text) > 3
        lo, hi = (0, MAX_STEPPING + 1) if too_long else (int(lo_text), int(hi_text or lo_text))
        if not lo <= hi <= MAX_STEPPING:
            raise InputError(
                f"{place}stepping range '{part.strip()[:40]}' in '{text[:40]}' is outside 0-{MAX_STEPPING} "
                "(CPUID's stepping is 4 bits) or backwards"
            )
        bitmap |= ((1 << (hi - lo + 1)) - 1) << lo
    return bitmap


def _bounded_int(value: Any, limit: int, what: str, where: str) -> int:
    text = str(value)
    if isinstance(value, bool) or not (isinstance(value, int) or (text.isdigit() and len(text) <= 4)):
        raise InputError(f"{where}: signature {what} {text[:20]!r} is not a number; expected 0-{limit}")
    number = int(value)
    if not 0 <= number <= limit:
        raise InputError(f"{where}: signature {what} {number} is outside 0-{limit}")
    return number


def _signatures(docs: Iterable[dict[str, Any]], where: str = "") -> tuple[ModelSignature, ...]:
    place = where or "a model"
    found = []
    for s in docs:
        if not isinstance(s, dict) or "family" not in s or "model" not in s:
            raise InputError(f"{place}: every signature needs 'family' and 'model' (and optionally 'stepping')")
        found.append(ModelSignature(
            _bounded_int(s["family"], MAX_FAMILY, "family", place),
            _bounded_int(s["model"], MAX_MODEL, "model", place),
            parse_steppings(s.get("stepping"), place),
        ))
    return tuple(found)


# -- built-in data ---------------------------------------------------------------------


def _feature_from_doc(index: int, doc: dict[str, Any]) -> Feature:
    if "msr" in doc:
        kind, leaf, subleaf, register = "msr", int(doc["msr"], 16), 0, "msr"
    else:
        location, register = doc["cpuid"].split()
        leaf_text, _, subleaf_text = location.partition(".")
        kind, leaf, subleaf = "cpuid", int(leaf_text, 16), int(subleaf_text or 0)
    return Feature(
        index=index,
        name=doc["name"],
        kind=kind,
        leaf=leaf,
        subleaf=subleaf,
        register=register,
        bit=int(doc["bit"]),
        qemu_names=tuple(doc.get("qemu", ())),
        migratable=doc.get("migratable", True),
    )


def _read_json(path: Path) -> Any:
    from guestcpu.formats.files import read_json

    return read_json(path, "a drop-in models file (JSON)")


def _releases(doc: Any) -> QemuReleases | None:
    if doc is None:
        return None
    return QemuReleases(since=str(doc["since"]), until=doc.get("until"))


def _model_from_doc(doc: dict[str, Any], target: dict[str, Any] | None, family: str, bits: Any) -> CpuModel:
    """``target`` is the canonical model's doc when ``doc`` is an alias."""
    body = target if target is not None else doc
    ident = body.get("cpuid")
    identity = (
        CpuidIdentity(
            vendor=ident["vendor"],
            family=ident["family"],
            model=ident["model"],
            stepping=ident["stepping"],
            level=ident["level"],
            xlevel=ident["xlevel"],
            model_id=ident["model_id"],
        )
        if ident
        else None
    )
    return CpuModel(
        name=doc["name"],
        order=int(doc["order"]),
        vendor=body.get("vendor"),
        features=bits(body.get("features", ())),
        removed=bits(body.get("removed", ())),
        added=bits(body.get("added", ())),
        signatures=_signatures(body.get("signatures", ())),
        alias_of=doc.get("alias_of"),
        version=doc.get("version", body.get("version")),
        family=family,
        decode_host=doc["decode"]["host"],
        decode_guest=doc["decode"]["guest"],
        compat_check=doc.get("compat_check", False),
        deprecated=doc.get("deprecated", False),
        identity=identity,
        qemu=_releases(doc.get("qemu")),
        notes=doc.get("notes", ""),
    )


def load_builtin() -> tuple[tuple[Feature, ...], tuple[Vendor, ...], list[CpuModel]]:
    data = Path(__file__).parent / "data"
    feature_doc = json.loads((data / "features.json").read_text())
    features = tuple(_feature_from_doc(i, d) for i, d in enumerate(feature_doc["features"]))
    vendors = tuple(Vendor(v["name"], v["string"]) for v in json.loads((data / "vendors.json").read_text())["vendors"])
    by_name = {f.name: f for f in features}

    def bits(names: Iterable[str]) -> int:
        value = 0
        for name in names:
            value |= 1 << by_name[name].index
        return value

    models: list[CpuModel] = []
    for path in sorted((data / "models").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".json"):
            continue
        family_doc = json.loads(path.read_text())
        docs = {d["name"]: d for d in family_doc["models"]}
        for doc in family_doc["models"]:
            target = docs[doc["alias_of"]] if doc.get("alias_of") else None
            models.append(_model_from_doc(doc, target, family_doc["family"], bits))
    return features, vendors, models


# -- drop-ins ------------------------------------------------------------------------


def _read_dropin(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".toml":
        import tomllib

        try:
            from guestcpu.formats.files import read_text

            doc = tomllib.loads(read_text(path, "a drop-in models file (TOML)"))
        except ValueError as exc:
            raise InputError(f"{path} is not valid TOML: {exc}") from None
    else:
        doc = _read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), list):
        raise InputError(
            f"{path}: expected a top-level 'model' list (TOML [[model]] tables or JSON {{\"model\": [...]}})"
        )
    models: list[dict[str, Any]] = doc["model"]
    return models


_DROPIN_KEYS = {"name", "base", "vendor", "features", "add", "remove", "signatures", "notes", "deprecated", "model_id"}


def _dropin_model(entry: Any, path: Path, catalog: Catalog, order: int) -> CpuModel:
    where = str(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise InputError(f"{where}: every model needs a 'name' string")
    name = entry["name"]
    unknown = sorted(set(entry) - _DROPIN_KEYS)
    if unknown:
        raise InputError(f"{where}: model '{name}' has unknown key(s) {unknown}; valid keys are {sorted(_DROPIN_KEYS)}")
    for key in ("features", "add", "remove"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: model '{name}': '{key}' must be a list of feature names")
    # An override of a built-in keeps what it does not restate: family, version,
    # signatures, CPUID identity and decode order.
    existing = catalog.find_model(name)
    base = catalog.model(entry["base"], where) if "base" in entry else None
    start = base or existing
    if "base" not in entry and "features" not in entry:
        raise InputError(f"{where}: model '{name}' needs 'base' (a model to start from) or 'features' (a full list)")
    features = base.features if base is not None else 0
    vendor = start.vendor if start else None
    signatures = start.signatures if start else ()
    identity = start.identity if start else None
    features |= catalog.bits(entry.get("features", []), where)
    features |= catalog.bits(entry.get("add", []), where)
    features &= ~catalog.bits(entry.get("remove", []), where)
    if "vendor" in entry:
        vendor = catalog.vendor(entry["vendor"], where).name
    if "model_id" in entry:
        if identity is None:
            raise InputError(
                f"{where}: model '{name}' sets model_id, but its base has no CPUID identity (QEMU does not know "
                "it); start from a model QEMU defines, e.g. one listed with 'QEMU 7.2: yes' by 'guestcpu models'"
            )
        identity = CpuidIdentity(**{**identity.__dict__, "model_id": str(entry["model_id"])})
    if "signatures" in entry:
        signatures = _signatures(entry["signatures"], f"{where}: model '{name}'")
    base_name = entry.get("base")
    family = existing.family if existing else (base.family if base else name)
    return CpuModel(
        name=name,
        order=existing.order if existing else order,
        vendor=vendor,
        features=features,
        signatures=signatures,
        version=existing.version if existing else None,
        family=family,
        decode_host=True,
        decode_guest=True,
        deprecated=bool(entry.get("deprecated", False)),
        identity=identity,
        source=where,
        notes=str(entry.get("notes", f"based on {base_name}" if base_name else "")),
    )


def apply_dropins(catalog: Catalog, directories: Iterable[Path]) -> Catalog:
    """A new catalog with every drop-in model of ``directories`` added or overriding."""
    files = [p for d in directories if d.is_dir() for p in sorted(d.iterdir()) if p.suffix in (".json", ".toml")]
    if not files:
        return catalog
    models = {m.name: m for m in catalog.models}
    order = _DROPIN_ORDER_BASE
    current = catalog
    for path in files:
        for entry in _read_dropin(path):
            model = _dropin_model(entry, path, current, order)
            models[model.name] = model
            order += 1
            # Later entries, in this file too, may build on this one.
            current = Catalog(catalog.features, catalog.vendors, tuple(models.values()), catalog.source)
    return Catalog(catalog.features, catalog.vendors, tuple(models.values()), f"{catalog.source}+drop-ins")


# -- libvirt cpu_map -----------------------------------------------------------------


def load_libvirt_cpu_map(directory: Path) -> Catalog:
    from guestcpu.catalog.cpumap import family_of, read_cpu_map
    from guestcpu.model.names import version_of

    parsed = read_cpu_map(directory)
    features: list[Feature] = []
    for index, doc in enumerate(parsed["features"]):
        bits = doc["bits"]
        # Each entry is {"cpuid": [leaf, subleaf, reg, mask]} or {"msr": [index, mask]}; mask is last.
        masks = [next(iter(entry.values()))[-1] for entry in bits]
        if len(masks) != 1 or masks[0].bit_count() != 1:
            raise InputError(
                f"{directory}: feature '{doc['name']}' spans several bits; guestcpu supports one-bit features only"
            )
        bit = bits[0]
        if "cpuid" in bit:
            leaf, subleaf, reg, mask = bit["cpuid"]
            features.append(
                Feature(index, doc["name"], "cpuid", leaf, subleaf, reg, mask.bit_length() - 1,
                        tuple(doc["aliases"]), doc["migratable"])
            )
        else:
            msr_index, mask = bit["msr"]
            features.append(
                Feature(index, doc["name"], "msr", msr_index, 0, "msr", mask.bit_length() - 1,
                        tuple(doc["aliases"]), doc["migratable"])
            )
    by_name = {f.name: f for f in features}

    def bits_of(names: Iterable[str], model: str) -> int:
        value = 0
        for name in names:
            if name not in by_name:
                raise UnknownNameError("feature", name, by_name, f"{directory} model {model}")
            value |= 1 << by_name[name].index
        return value

    vendors = tuple(Vendor(v["name"], v["string"]) for v in parsed["vendors"])
    models = [
        CpuModel(
            name=m["name"],
            order=m["order"],
            vendor=m["vendor"],
            features=bits_of(m["features"], m["name"]),
            removed=bits_of(m["removed"], m["name"]),
            added=bits_of(m["added"], m["name"]),
            signatures=_signatures(m["signatures"], f"{directory} model {m['name']}"),
            alias_of=m["alias_of"],
            version=version_of(m["name"]),
            family=family_of(m["name"]),
            decode_host=m["decode_host"],
            decode_guest=m["decode_guest"],
            compat_check=m["compat_check"],
            source=str(directory),
        )
        for m in parsed["models"]
    ]
    return Catalog(tuple(features), vendors, tuple(models), f"libvirt cpu_map {directory}")


def load_catalog(libvirt_dir: Path | None = None, dropin_dirs: Iterable[Path] | None = None) -> Catalog:
    """The catalog guestcpu uses: a libvirt cpu_map if given, else the built-in data, plus drop-ins."""
    if libvirt_dir is not None:
        # A libvirt map is used as the *whole* catalog, for 1:1 comparisons with libvirt.
        return load_libvirt_cpu_map(libvirt_dir)
    features, vendors, models = load_builtin()
    catalog = Catalog(features, vendors, tuple(models))
    return apply_dropins(catalog, trusted_dropin_dirs() if dropin_dirs is None else dropin_dirs)
