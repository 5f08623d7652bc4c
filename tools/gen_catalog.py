#!/usr/bin/env python3
"""Generate guestcpu's built-in x86 catalog data files.

Sources (copies with provenance under tests/data, read only here and by the test that
re-runs this generator):
  * libvirt 11.3's cpu_map (features, vendors, models, decode flags, signatures):
    tests/data/libvirt-11.3/cpu_map;
  * QEMU 10.0's answers (every model and version it defines: vendor, family/model/
    stepping, level, xlevel, model-id, deprecation, alias-of and features; every
    feature it names with its CPUID bit), recorded from the binary by
    tools/record_qemu_models.py: tests/data/qemu-10.0/x86_models.json;
  * libvirt's recorded QMP sessions of QEMU 6.2 to 10.0 (which releases define each
    model version; every property spelling): tests/data/qemucapabilitiesdata.

A model or feature QEMU 10 defines and libvirt's cpu_map lacks (YongFeng, Zhaoxin's
ace2/phe/pmm …) enters the catalog from QEMU's own definition; such models are never
chosen by decode (libvirt's cpu_map decides decode answers, so they stay libvirt's).

Output: src/guestcpu/catalog/data/{features,vendors}.json and models/<family>.json,
written so that one feature or one model field is one line (easy to read and diff).
Re-running it on the same sources gives byte-identical files.

    python tools/gen_catalog.py [--out DIR]
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
TESTDATA = ROOT / "tests" / "data"
SCHEMA = 1
#: MSR-based features QEMU names that libvirt 11.3's cpu_map lacks (QEMU's
#: target/i386/cpu.c feature_word_info; a paused guest cannot show MSR bits).
QEMU_MSR_FEATURES = {"bhi-no": ("0x0000010a", 20)}
#: Vendors of QEMU models that libvirt 11.3's cpu_map has no vendor for.
QEMU_VENDORS = {"CentaurHauls": "Zhaoxin"}


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def release_of(version: str) -> str:
    """``"7.2.0"`` -> ``"7.2"``; a stable update keeps its micro (``"10.0.2"``)."""
    major, minor, *micro = version.split(".")
    return f"{major}.{minor}" if not micro or micro[0] == "0" else f"{major}.{minor}.{micro[0]}"


def recorded_releases(replies_dir: Path) -> tuple[list[str], dict[str, set[str]], set[str]]:
    """(releases oldest first, model -> releases that define it, every bool property name)."""
    defined: dict[str, set[str]] = {}
    props: set[str] = set()
    releases: list[str] = []
    for path in replies_dir.glob("caps_*_x86_64.json"):
        doc = json.loads(path.read_text())
        release = release_of(doc["qemu"])
        releases.append(release)
        for exchange in doc["exchanges"]:
            if exchange["execute"] == "query-cpu-definitions" and exchange["accel"] == "tcg":
                for entry in exchange["return"]:
                    defined.setdefault(entry["name"], set()).add(release)
            elif exchange["execute"] == "qom-list-properties":
                props |= {p["name"] for p in exchange["return"] if p.get("type") == "bool"}
    releases.sort(key=release_sort_key)
    return releases, defined, props


def release_sort_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in [*release.split("."), "0"][:3])


def release_range(found: set[str], releases: list[str], name: str) -> dict[str, str] | None:
    """{"since": first, "until": last} over ``releases`` (no "until" while the newest has it)."""
    if not found:
        return None
    indices = sorted(releases.index(r) for r in found)
    if indices != list(range(indices[0], indices[-1] + 1)):
        print(f"note: {name} is defined by QEMU {sorted(found)}, not one range; recording the span")
    doc = {"since": releases[indices[0]]}
    if indices[-1] != len(releases) - 1:
        doc["until"] = releases[indices[-1]]
    return doc


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


def model_doc(entry: dict[str, Any], qemu_models: dict[str, Any], feature_order: dict[str, int],
              releases: dict[str, str] | None) -> dict[str, Any]:
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
    if releases is not None:
        doc["qemu"] = releases
    if q is not None and q.get("deprecated"):
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
    if entry.get("notes"):
        doc["notes"] = entry["notes"]
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


def qemu_only_entries(qemu_models: dict[str, Any], known: set[str], spelling: dict[str, str],
                      vendor_names: dict[str, str], first_order: int) -> list[dict[str, Any]]:
    """cpu_map-style entries for the models QEMU defines and the cpu_map lacks."""
    entries: list[dict[str, Any]] = []
    order = first_order
    for name in sorted(qemu_models, key=lambda n: (family_of(n), version_of(n) or 0, n)):
        q = qemu_models[name]
        if name in known or name in ("host", "max", "base"):
            continue
        order += 1
        features = []
        for prop in q["features"]:
            if prop in spelling:
                features.append(spelling[prop])
            else:
                print(f"note: {name}: QEMU property {prop} is no catalog feature (left to QEMU)")
        entries.append({
            "name": name, "alias_of": q.get("alias-of"), "order": order,
            "decode_host": False, "decode_guest": False, "compat_check": False,
            "vendor": vendor_names[q["vendor"]],
            "signatures": [{"family": q["family"], "model": q["model"]}],
            "features": sorted(set(features)), "removed": [], "added": [],
            "notes": "defined by QEMU, not by libvirt's cpu_map",
        })
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-map", type=Path, default=TESTDATA / "libvirt-11.3" / "cpu_map")
    parser.add_argument("--qemu-models", type=Path, default=TESTDATA / "qemu-10.0" / "x86_models.json")
    parser.add_argument("--replies", type=Path, default=TESTDATA / "qemucapabilitiesdata")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()

    cpu_map = read_cpu_map(args.cpu_map)
    recorded = json.loads(args.qemu_models.read_text())
    qemu_models: dict[str, Any] = recorded["models"]
    releases, defined, qemu_props = recorded_releases(args.replies)
    newest = release_of(recorded["qemu"])
    if newest not in releases:
        releases.append(newest)
        releases.sort(key=release_sort_key)
    for name in qemu_models:
        defined.setdefault(name, set()).add(newest)
    qemu_props |= set(recorded["bool_properties"])
    qemu_canonical = {f for m in qemu_models.values() for f in m.get("features", [])}

    source = {"libvirt": "11.3.0 src/cpu_map (LGPL-2.1-or-later)",
              "qemu": f"{recorded['qemu']} ({recorded['package']}) QMP replies; releases "
                      f"{releases[0]}-{releases[-1]} from libvirt's recorded QMP sessions"}
    features = [feature_doc(f, qemu_props, qemu_canonical) for f in cpu_map["features"]]
    spelling = {norm(s): f["name"] for f in features for s in [f["name"], *f["qemu"]]}
    for prop in sorted(qemu_canonical):
        if norm(prop) in spelling:
            continue
        bits = recorded["feature_bits"].get(prop) or []
        if len(bits) == 1:
            features.append({"name": prop, "cpuid": bits[0]["cpuid"], "bit": bits[0]["bit"], "qemu": [prop]})
        elif prop in QEMU_MSR_FEATURES:
            msr, bit = QEMU_MSR_FEATURES[prop]
            features.append({"name": prop, "msr": msr, "bit": bit, "qemu": [prop]})
        else:
            print(f"note: QEMU feature {prop} has no known CPUID or MSR bit; left out of the catalog")
            continue
        spelling[norm(prop)] = prop
    qemu_spelling = {p: spelling[norm(p)] for p in qemu_canonical if norm(p) in spelling}
    feature_order = {f["name"]: i for i, f in enumerate(features)}
    vendors = list(cpu_map["vendors"])
    for string, name in QEMU_VENDORS.items():
        if any(q["vendor"] == string for q in qemu_models.values()) and all(v["string"] != string for v in vendors):
            vendors.append({"name": name, "string": string})
    vendor_names = {v["string"]: v["name"] for v in vendors}
    write(args.out / "features.json", {"schema": SCHEMA, "source": source, "features": features})
    write(args.out / "vendors.json", {"schema": SCHEMA, "source": source, "vendors": vendors})

    known = {e["name"] for e in cpu_map["models"]}
    last_order = max(e["order"] for e in cpu_map["models"])
    entries = list(cpu_map["models"]) + qemu_only_entries(qemu_models, known, qemu_spelling, vendor_names,
                                                          last_order)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        # Cross-check: QEMU's alias-of (machine none) must agree with libvirt's canonical links.
        q = qemu_models.get(entry["name"])
        if q is not None and q.get("alias-of") != entry["alias_of"]:
            print(f"note: {entry['name']}: QEMU alias-of {q.get('alias-of')} vs libvirt {entry['alias_of']}")
        span = release_range(defined.get(entry["name"], set()), releases, entry["name"])
        by_family.setdefault(family_of(entry["name"]), []).append(
            model_doc(entry, qemu_models, feature_order, span))

    models_dir = args.out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for old in models_dir.glob("*.json"):
        old.unlink()
    for family, docs in sorted(by_family.items()):
        write(models_dir / f"{family}.json", {"schema": SCHEMA, "family": family, "source": source, "models": docs})
    print(f"{len(features)} features, {len(entries)} models in {len(by_family)} families -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
