"""Read a libvirt ``cpu_map`` directory (x86) into catalog documents.

Used twice: by ``tools/gen_catalog.py`` to produce the built-in data files, and at
run time by ``--catalog-libvirt DIR`` to use any libvirt install's map as the whole
catalog.  The output is the same plain-dict document shape the JSON data files hold,
so both paths go through one loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.xmlsafe import parse_xml_file
from guestcpu.model.names import base_of

_VARIANT_SUFFIXES = ("-noTSX-IBRS", "-noTSX", "-IBRS", "-IBPB")


def family_of(name: str) -> str:
    """The model family a name belongs to: ``Skylake-Client-noTSX-IBRS`` -> ``Skylake-Client``."""
    name = base_of(name)
    for suffix in _VARIANT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _hex(value: str | None) -> int:
    return int(value, 16) if value else 0


def _parse_feature(node: Any) -> dict[str, Any]:
    name = node.get("name")
    bits: list[dict[str, Any]] = []
    for child in node:
        if child.tag == "cpuid":
            leaf = _hex(child.get("eax_in"))
            subleaf = _hex(child.get("ecx_in"))
            for reg in ("eax", "ebx", "ecx", "edx"):
                mask = _hex(child.get(reg))
                if mask:
                    bits.append({"cpuid": [leaf, subleaf, reg, mask]})
        elif child.tag == "msr":
            mask = (_hex(child.get("edx")) << 32) | _hex(child.get("eax"))
            bits.append({"msr": [_hex(child.get("index")), mask]})
    aliases = [a.get("name") for a in node if a.tag == "alias" and a.get("name")]
    if not bits:
        raise InputError(f"cpu_map feature '{name}' has no <cpuid> or <msr> bits")
    return {
        "name": name,
        "bits": bits,
        "aliases": aliases,
        "migratable": node.get("migratable", "yes") != "no",
    }


def _small_number(text: str | None) -> int | str | None:
    return int(text) if text and text.isdigit() and len(text) <= 4 else text


def _signature(node: Any) -> dict[str, Any]:
    # Anything but a small number is kept as text: the loader checks numbers and stepping ranges.
    sig: dict[str, Any] = {key: _small_number(node.get(key)) for key in ("family", "model")}
    if node.get("stepping"):
        sig["stepping"] = node.get("stepping")
    return sig


def _parse_model(node: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": node.get("name"),
        "ancestor": None,
        "decode_host": True,
        "decode_guest": True,
        "compat_check": False,
        "signatures": None,
        "vendor": None,
        "features": [],
        "removed": [],
        "added": [],
        "has_content": False,
    }
    for child in node:
        if not isinstance(child.tag, str):
            continue
        if child.tag == "model":
            raw["ancestor"] = child.get("name")
        elif child.tag == "decode":
            raw["decode_host"] = child.get("host") == "on"
            raw["decode_guest"] = child.get("guest") == "on"
        elif child.tag == "check":
            raw["compat_check"] = child.get("partial") == "compat"
        elif child.tag == "signature":
            raw["signatures"] = (raw["signatures"] or []) + [_signature(child)]
            raw["has_content"] = True
        elif child.tag == "vendor":
            raw["vendor"] = child.get("name")
            raw["has_content"] = True
        elif child.tag == "feature":
            raw["has_content"] = True
            fname = child.get("name")
            if child.get("removed") == "yes":
                raw["removed"].append(fname)
                continue
            if child.get("added") == "yes":
                # QEMU enables these, but libvirt 11.3 keeps them out of the model's data:
                # only check='full' tolerates them.
                raw["added"].append(fname)
                continue
            raw["features"].append(fname)
    return raw


def read_cpu_map(directory: Path) -> dict[str, Any]:
    """Parse ``index.xml`` and its includes for arch x86.

    Returns ``{"vendors": [...], "features": [...], "models": [...]}`` where models are
    flattened (inheritance resolved) and listed in index order, each with ``alias_of``
    set where libvirt's canonical-name rule makes it an alias.
    """
    index_path = directory / "index.xml"
    if not index_path.is_file():
        raise InputError(
            f"{directory} is not a libvirt cpu_map directory: it has no index.xml "
            "(expected e.g. /usr/share/libvirt/cpu_map)"
        )
    index = parse_xml_file(index_path)
    arch = next((a for a in index.iter("arch") if a.get("name") == "x86"), None)
    if arch is None:
        raise InputError(f"{index_path} has no <arch name='x86'> section")

    vendors: list[dict[str, str]] = []
    features: list[dict[str, Any]] = []
    raw_models: list[dict[str, Any]] = []
    for include in arch.iter("include"):
        filename = include.get("filename", "")
        if not filename or "/" in filename or filename.startswith("."):
            raise InputError(f"{index_path} includes {filename!r}; expected a file name inside {directory}")
        path = directory / filename
        if not path.is_file():
            raise InputError(f"{index_path} includes {path.name}, which does not exist")
        root = parse_xml_file(path)
        for node in root:
            if not isinstance(node.tag, str):
                continue
            if node.tag == "vendor":
                vendors.append({"name": node.get("name"), "string": node.get("string")})
            elif node.tag == "feature":
                features.append(_parse_feature(node))
            elif node.tag == "model":
                raw_models.append(_parse_model(node))

    by_name: dict[str, dict[str, Any]] = {}
    canonical: dict[str, str] = {}
    for raw in raw_models:
        resolved = {
            "signatures": raw["signatures"],
            "vendor": raw["vendor"],
            "features": list(raw["features"]),
            "removed": list(raw["removed"]),
            "added": list(raw["added"]),
        }
        parent_name = raw["ancestor"]
        if parent_name:
            parent = by_name.get(parent_name)
            if parent is None:
                raise InputError(f"cpu_map model '{raw['name']}' inherits unknown model '{parent_name}'")
            if not raw["has_content"]:
                canonical[parent_name] = raw["name"]
            inherited = [f for f in parent["features"] if f not in raw["removed"]]
            resolved["features"] = inherited + [f for f in raw["features"] if f not in inherited]
            resolved["removed"] = sorted(set(parent["removed"]) | set(raw["removed"]))
            resolved["added"] = sorted(set(parent["added"]) | set(raw["added"]))
            if raw["signatures"] is None:
                resolved["signatures"] = parent["signatures"]
            if raw["vendor"] is None:
                resolved["vendor"] = parent["vendor"]
        by_name[raw["name"]] = {
            "name": raw["name"],
            "decode_host": raw["decode_host"],
            "decode_guest": raw["decode_guest"],
            "compat_check": raw["compat_check"],
            "ancestor": parent_name,
            "pure_alias": bool(parent_name) and not raw["has_content"],
            **resolved,
        }

    models = []
    for order, raw in enumerate(raw_models):
        entry = dict(by_name[raw["name"]])
        entry["order"] = order
        entry["signatures"] = entry["signatures"] or []
        models.append(entry)
    # libvirt stores version aliases "reversed": Skylake-Client-v1 = <model Skylake-Client/>
    # makes the bare name an alias whose canonical name is the -vN one.
    for entry in models:
        entry["alias_of"] = canonical.get(entry["name"])
    return {"vendors": vendors, "features": features, "models": models}
