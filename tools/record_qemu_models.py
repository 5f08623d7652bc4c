#!/usr/bin/env python3
"""Record what one QEMU binary defines: every x86 CPU model and every feature it names.

The catalog generator (tools/gen_catalog.py) reads the result, so that the catalog
knows every model and feature of the newest QEMU, not only what libvirt's cpu_map has:

* every model of ``query-cpu-definitions`` with its identity (vendor, family, model,
  stepping, level, xlevel, model-id from the full expansion) and its features (true
  boolean props of the static expansion under TCG; TCG turns ``vme`` off for every
  model, so ``vme`` is taken from the expansion under KVM when KVM is usable);
* every boolean property the ``max`` CPU type has (each QEMU spelling);
* the CPUID bit of each feature property: a paused guest started with ``-cpu
  base,+NAME`` shows it in ``feature-words`` or ``filtered-features`` (MSR-based
  features are not in those words, so they have no bit here).

usage: python tools/record_qemu_models.py QEMU_BINARY OUTPUT.json [--bits-for NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from guestcpu.formats.qemu_json import NON_FEATURE_PROPS  # noqa: E402
from guestcpu.qemu.process import QemuProcess, base_args, kvm_unusable_reason, run_sync  # noqa: E402

IDENTITY = ("vendor", "family", "model", "stepping", "level", "xlevel", "model-id")


def _expand(kind: str, name: str) -> tuple[str, dict[str, Any]]:
    return "query-cpu-model-expansion", {"type": kind, "model": {"name": name}}


async def _models(binary: str, accel: str) -> tuple[Any, list[dict[str, Any]], dict[str, Any], dict[str, Any], Any]:
    async with QemuProcess(binary, base_args("none", accel), timeout=60, name=f"record-{accel}") as qemu:
        version, definitions, props = await qemu.execute_many([
            ("query-version", None), ("query-cpu-definitions", None),
            ("qom-list-properties", {"typename": "max-x86_64-cpu"}),
        ])
        names = [d["name"] for d in definitions]
        static = await qemu.execute_many(_expand("static", n) for n in names)
        full = await qemu.execute_many(_expand("full", n) for n in names)
    return (version, definitions, dict(zip(names, static, strict=True)), dict(zip(names, full, strict=True)),
            props)


async def _bit_of(binary: str, name: str) -> list[dict[str, Any]]:
    """The CPUID words ``-cpu base,+name`` sets beyond ``-cpu base`` (under TCG, filtered or not)."""
    words: list[list[dict[str, Any]]] = []
    for cpu in ("base", f"base,+{name}"):
        args = [*base_args("pc", "tcg"), "-S", "-cpu", cpu]
        async with QemuProcess(binary, args, timeout=60, name="record-bit") as qemu:
            path = (await qemu.execute("query-cpus-fast"))[0]["qom-path"]
            given, filtered = await qemu.execute_many([
                ("qom-get", {"path": path, "property": "feature-words"}),
                ("qom-get", {"path": path, "property": "filtered-features"}),
            ])
            words.append([*given, *filtered])

    def key(w: dict[str, Any]) -> tuple[Any, ...]:
        return (w["cpuid-input-eax"], w.get("cpuid-input-ecx", 0), w["cpuid-register"])

    before: dict[tuple[Any, ...], int] = {}
    for w in words[0]:
        before[key(w)] = before.get(key(w), 0) | w["features"]
    after: dict[tuple[Any, ...], int] = {}
    for w in words[1]:
        after[key(w)] = after.get(key(w), 0) | w["features"]
    found = []
    for k, value in sorted(after.items()):
        new = value & ~before.get(k, 0)
        for bit in range(32):
            if new >> bit & 1:
                found.append({"cpuid": f"0x{k[0]:08x}.{k[1]} {k[2].lower()}", "bit": bit})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("output", type=Path)
    parser.add_argument("--bits-for", nargs="*", default=None,
                        help="feature properties whose CPUID bit to find (default: every true feature prop "
                             "of any model that the catalog does not know)")
    args = parser.parse_args()

    version, definitions, static, full, props = run_sync(_models(args.binary, "tcg"))
    kvm_static: dict[str, Any] = {}
    if kvm_unusable_reason() is None:
        _v, _d, kvm_static, _f, _p = run_sync(_models(args.binary, "kvm"))
    models: dict[str, Any] = {}
    for entry in definitions:
        name = entry["name"]
        record: dict[str, Any] = {"alias-of": entry.get("alias-of"), "deprecated": bool(entry.get("deprecated"))}
        fprops = full[name]["model"]["props"]
        record.update({k: fprops.get(k) for k in IDENTITY})
        features = {k for k, v in static[name]["model"]["props"].items()
                    if v is True and k not in NON_FEATURE_PROPS}
        if kvm_static.get(name, {}).get("model", {}).get("props", {}).get("vme") is True:
            features.add("vme")
        record["features"] = sorted(features)
        models[name] = record
    bool_props = sorted(p["name"] for p in props if p.get("type") == "bool")

    if args.bits_for is None:
        from guestcpu.catalog.loader import load_catalog

        catalog = load_catalog(dropin_dirs=[])
        named = {f for m in models.values() for f in m["features"]}
        wanted = sorted(f for f in named if not catalog.has_feature(f))
    else:
        wanted = args.bits_for
    bits = {name: asyncio.run(_bit_of(args.binary, name)) for name in wanted}

    doc = {
        "qemu": f"{version['qemu']['major']}.{version['qemu']['minor']}.{version['qemu']['micro']}",
        "package": version.get("package", ""),
        "vme_from_kvm": bool(kvm_static),
        "models": models,
        "bool_properties": bool_props,
        "feature_bits": bits,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{args.output}: QEMU {doc['qemu']}, {len(models)} models, {len(bool_props)} boolean properties, "
          f"CPUID bits of {len(bits)} features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
