"""Fleets for the fleet tests: real CPUs of libvirt's corpus seen through this project's recorded QEMU 7.2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.fleet.corpus import corpus_cpus
from guestcpu.fleet.cpu_pin import pin_from_caps
from guestcpu.fleet.synthetic import HostKind, capture_document, host_kinds
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.cache import read_caps_file
from guestcpu.qemu.caps import QemuCaps, caps_from_document

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
DOMCAPS = DATA / "libvirt-9.0"
#: two Intel generations and a Haswell-era Xeon: the weakest decides the baseline
THREE = ("Core-i7-8700", "Xeon-Gold-6148", "Xeon-E5-2650-v3")


def qemu_caps() -> tuple[QemuCaps, QemuCaps]:
    return (read_caps_file(str(DATA / "qemu-7.2" / "caps-kvm.json")),
            read_caps_file(str(DATA / "qemu-7.2" / "caps-tcg.json")))


def kinds(
    catalog: Catalog, names: tuple[str, ...] | None = None, variations: tuple[str, ...] = ("",)
) -> list[HostKind]:
    kvm, tcg = qemu_caps()
    cpus = {c.name: c.props for c in corpus_cpus(CPUTESTDATA, catalog) if names is None or c.name in names}
    return host_kinds(cpus, kvm, tcg, variations)


def capture_bytes(kind: HostKind, hostname: str) -> bytes:
    return json.dumps(capture_document(kind, hostname)).encode()


def write_captures(catalog: Catalog, directory: Path, names: tuple[str, ...] = THREE,
                   variation: str = "") -> list[Path]:
    by_cpu = {k.cpu: k for k in kinds(catalog, names, (variation,))}
    paths = []
    for name in names:
        path = directory / f"{name}{'-' + variation if variation else ''}.json"
        path.write_bytes(capture_bytes(by_cpu[name], name.lower()))
        paths.append(path)
    return paths


def model_pin(kind: HostKind, model: str, catalog: Catalog, *, accel: str = "kvm",
              machine: str = "pc-q35-7.2", overrides: dict[str, bool] | None = None) -> Pin:
    """A pin of ``model`` as this host kind's QEMU expands it (what define would record, minus machine props)."""
    caps = caps_from_document(dict(kind.accels[accel]))
    return pin_from_caps(caps, model, overrides or {}, machine, catalog, note="test pin")


def pin_document(pin: Pin) -> dict[str, Any]:
    from guestcpu.lifecycle.pin import pin_to_document

    return pin_to_document(pin)
