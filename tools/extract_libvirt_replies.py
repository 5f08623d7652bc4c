"""Extract the CPU-related QMP exchanges of libvirt's recorded QEMU sessions.

libvirt's ``tests/qemucapabilitiesdata/caps_<version>_<arch>.replies`` are real QMP
sessions of released QEMUs: every command libvirt sends while probing a binary,
followed by QEMU's reply, first under KVM, then (after a second ``qmp_capabilities``)
under TCG.  The whole files are large (the QAPI schema alone is most of them); this
keeps only what guestcpu's probe reads: the version, machine types, CPU definitions,
CPU model expansions and the CPU types' QOM properties, each with its accelerator.

usage: python tools/extract_libvirt_replies.py LIBVIRT_SOURCE_DIR OUTPUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KEEP = {"query-version", "query-machines", "query-cpu-definitions", "query-cpu-model-expansion",
        "query-cpu-model-comparison", "query-cpu-model-baseline", "qom-list-properties"}
#: libvirt 11.3 has x86_64 sessions of QEMU 6.2 to 10.0 and s390x of 8.1 to 10.0.
NAME = re.compile(r"caps_(\d+\.\d+\.\d+)_(x86_64|s390x)\.replies$")


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a .replies file (one after another, separated by blank lines)."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        obj, pos = decoder.raw_decode(text, pos)
        yield obj


def exchanges(path: Path) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    pending: dict[str, dict[str, Any]] = {}
    sessions = 0
    for obj in json_objects(path.read_text()):
        if "execute" in obj:
            if obj["execute"] == "qmp_capabilities":
                sessions += 1
            pending[obj["id"]] = obj
            continue
        command = pending.pop(obj.get("id"), None)
        if command is None or command["execute"] not in KEEP:
            continue
        args = command.get("arguments")
        if command["execute"] == "qom-list-properties" and "cpu" not in str(args.get("typename", "")):
            continue
        entry: dict[str, Any] = {"accel": "kvm" if sessions <= 1 else "tcg", "execute": command["execute"]}
        if args:
            entry["arguments"] = args
        entry.update({k: obj[k] for k in ("return", "error") if k in obj})
        kept.append(entry)
    return kept


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source, out = Path(argv[1]) / "tests" / "qemucapabilitiesdata", Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("caps_*.replies")):
        match = NAME.search(path.name)
        if not match:
            continue
        doc = {"source": f"libvirt tests/qemucapabilitiesdata/{path.name}", "qemu": match.group(1),
               "arch": match.group(2), "exchanges": exchanges(path)}
        target = out / f"caps_{match.group(1)}_{match.group(2)}.json"
        target.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=False) + "\n")
        print(f"{target}: {len(doc['exchanges'])} exchanges")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
