#!/usr/bin/env python3
"""Generate guestcpu's built-in x86 catalog data files.

Sources (read only here, never at run or test time):
  * libvirt 11.3's cpu_map (features, vendors, models, decode flags, signatures),
  * QEMU 7.2's replies (every model and version: vendor, family/model/stepping,
    level, xlevel, model-id, deprecation, alias-of; every property spelling).

Output: src/guestcpu/catalog/data/{features,vendors}.json and models/<family>.json,
written so that one feature or one model field is one line (easy to read and diff).
Re-running it on the same sources gives byte-identical files.

    python tools/gen_catalog.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from guestcpu.catalog.cpumap import family_of, read_cpu_map  # noqa: E402
from guestcpu.formats.files import write_output  # noqa: E402
from guestcpu.model.names import version_of  # noqa: E402

DATA = ROOT / "src" / "guestcpu" / "catalog" / "data"
SCHEMA = 1


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def qemu_property_names(qemu_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted((qemu_dir / "qmp-replies").glob("qom-list-properties-*-max-x86_64-cpu.json")):
        for prop in json.loads(path.read_text())["return"]:
            if prop.get("type") == "bool":
                names.add(prop["name"])
    for path in sorted((qemu_dir / "qmp-replies").glob("expansion-*-static-max.json")):
        for key, value in json.loads(path.read_text())["return"]["model"]["props"].items():
            if isinstance(value, bool):
                names.add(key)
    return names


def feature_doc(feature: dict[str, Any], qemu_props: set[str], qemu_canonical: set[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": feature["name"]}
    (bit,) = feature["bits"]  # libvirt 11.3: every feature is exactly one bit
    if "cpuid" in bit:
        leaf, subleaf, reg, mask = bit["cpuid"]
        doc["cpuid"] = f"0x{leaf:08x}.{subleaf} {reg}"
    else:
        index, mask = bit["msr"]
        doc["msr"] = f"0x{index:08x}"
    doc["bit"] = mask.bit_length() - 1
    keys = {norm(feature["name"])} | {norm(a) for a in feature["aliases"]}
    spellings = sorted(p for p in qemu_props if norm(p) in keys)
    preferred = [p for p in spellings if p in qemu_canonical]
    if not spellings:
        # Features newer than QEMU 7.2: QEMU's spelling is the libvirt alias or the name.
        spellings = sorted(set(feature["aliases"]) | {feature["name"]})
    first = preferred[:1] or spellings[:1]
    qemu = first + [s for s in spellings if s not in first]
    doc["qemu"] = qemu
    if not feature["migratable"]:
        doc["migratable"] = False
    return doc


def model_doc(entry: dict[str, Any], qemu_models: dict[str, Any], feature_order: dict[str, int]) -> dict[str, Any]:
    name = entry["name"]
    doc: dict[str, Any] = {"name": name}
    if entry["alias_of"]:
        doc["alias_of"] = entry["alias_of"]
    version = version_of(name)
    if version is not None:
        doc["version"] = version
    doc["order"] = entry["order"]
    doc["decode"] = {"host": entry["decode_host"], "guest": entry["decode_guest"]}
    if entry["compat_check"]:
        doc["compat_check"] = True
    q = qemu_models.get(name)
    if q is not None:
        doc["qemu_7_2"] = True
        if q.get("deprecated"):
            doc["deprecated"] = True
    if entry["alias_of"]:
        return doc  # everything else comes from the canonical model
    doc["vendor"] = entry["vendor"]
    if entry["signatures"]:
        doc["signatures"] = entry["signatures"]
    if q is not None:
        doc["cpuid"] = {
            "vendor": q["vendor"],
            "family": q["family"],
            "model": q["model"],
            "stepping": q["stepping"],
            "level": q["level"],
            "xlevel": q["xlevel"],
            "model_id": q["model-id"],
        }
    doc["features"] = sorted(entry["features"], key=lambda f: feature_order[f])
    if entry["removed"]:
        doc["removed"] = sorted(entry["removed"], key=lambda f: feature_order[f])
    if entry["added"]:
        doc["added"] = sorted(entry["added"], key=lambda f: feature_order[f])
    return doc


def dump(obj: Any, indent: int = 0) -> str:
    """JSON with one scalar list item or short object per line, for readable diffs."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if len(json.dumps(obj)) < 110 and not any(isinstance(v, dict) for v in obj.values()):
            return json.dumps(obj)
        inner = ",\n".join(f'{pad}  {json.dumps(k)}: {dump(v, indent + 1)}' for k, v in obj.items())
        return "{\n" + inner + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        inner = ",\n".join(f"{pad}  {dump(v, indent + 1)}" for v in obj)
        return "[\n" + inner + "\n" + pad + "]"
    return json.dumps(obj)


def write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(str(path), dump(obj) + "\n", what="catalog data")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    cpu_map_dir = args.shared / "data" / "libvirt-11.3" / "cpu_map"
    qemu_dir = args.shared / "data" / "qemu-7.2"

    cpu_map = read_cpu_map(cpu_map_dir)
    qemu_models = json.loads((qemu_dir / "x86_models.json").read_text())["models"]
    qemu_props = qemu_property_names(qemu_dir)
    qemu_canonical = {f for m in qemu_models.values() for f in m.get("features", [])}

    source = {"libvirt": "11.3.0 src/cpu_map (LGPL-2.1-or-later)", "qemu": "7.2.22 (Debian 12) QMP replies"}
    features = [feature_doc(f, qemu_props, qemu_canonical) for f in cpu_map["features"]]
    feature_order = {f["name"]: i for i, f in enumerate(features)}
    write(DATA / "features.json", {"schema": SCHEMA, "source": source, "features": features})
    write(DATA / "vendors.json", {"schema": SCHEMA, "source": source, "vendors": cpu_map["vendors"]})

    # Cross-check: QEMU's alias-of (machine none) must agree with libvirt's canonical links.
    by_family: dict[str, list[dict[str, Any]]] = {}
    for entry in cpu_map["models"]:
        q = qemu_models.get(entry["name"])
        if q is not None and q.get("alias-of") != entry["alias_of"]:
            print(f"note: {entry['name']}: QEMU alias-of {q.get('alias-of')} vs libvirt {entry['alias_of']}")
        by_family.setdefault(family_of(entry["name"]), []).append(model_doc(entry, qemu_models, feature_order))

    models_dir = DATA / "models"
    for old in models_dir.glob("*.json"):
        old.unlink()
    for family, docs in sorted(by_family.items()):
        write(models_dir / f"{family}.json", {"schema": SCHEMA, "family": family, "source": source, "models": docs})
    print(f"{len(features)} features, {len(cpu_map['models'])} models in {len(by_family)} families -> {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
