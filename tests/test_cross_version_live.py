"""Moves between QEMU 7.2 and 10.0 with real binaries under TCG, judged before anything is sent.

A pin made on one release is checked against the other's capabilities; when the check
says OK, a real live migration proves it (the destination's vCPU equals the pin); when
it refuses, it names what stops the guest, and a real start on the other release shows
that start would indeed not give (or not verify) the pinned CPU.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.define import define
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.live import compare_live, read_live
from guestcpu.lifecycle.migration import migrate_pinned, wait_incoming
from guestcpu.lifecycle.pin import Pin
from guestcpu.lifecycle.start import verified_guest
from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import known_features
from guestcpu.qemu.process import run_sync
from qemu_support import HASWELL_TCG, QEMU, QEMU10, QEMU10_REASON

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(QEMU is None or QEMU10 is None,
                                                   reason=f"needs QEMU 7.2 and 10.x: {QEMU10_REASON}")]


@pytest.fixture()
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gc-xv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def binaries() -> tuple[str, str]:
    assert QEMU is not None and QEMU10 is not None
    return QEMU, QEMU10.x86_64


def tcg(binary: str, cache_dir: Path) -> QemuCaps:
    return load_caps(binary, "tcg", cache_dir=cache_dir).caps


def pin_on(binary: str, xml: str, catalog: Catalog, cache_dir: Path, machine: str = "pc-q35-7.2") -> Pin:
    return define(parse_guest(xml.encode(), "guest.xml"), catalog, binary=binary, accel="tcg", machine=machine,
                  cache_dir=cache_dir)


def migrate_between(pin: Pin, source: QemuCaps, destination: QemuCaps, catalog: Catalog, uri: str) -> dict[str, Any]:
    """A real live migration from ``source``'s QEMU to ``destination``'s, both started from the pin."""

    async def scenario() -> dict[str, Any]:
        async with verified_guest(pin, source.binary, catalog, known=known_features(source),
                                  extra_args=["-m", "128"], name="src") as src:
            await src.qemu.execute("cont")
            async with verified_guest(pin, destination.binary, catalog, known=known_features(destination),
                                      extra_args=["-m", "128"], incoming=uri, name="dst") as dst:
                result = await migrate_pinned(src.qemu, pin, destination, uri, name="dst")
                arrived = await wait_incoming(dst.qemu, timeout=30)
                live = await read_live(dst.qemu, pin.abi)
                return {"result": result, "arrived": arrived, "live": live}

    out: dict[str, Any] = run_sync(scenario())
    return out


def test_a_7_2_pin_migrates_to_10_0_and_back(catalog: Catalog, cache_dir: Path, sockdir: Path) -> None:
    old_bin, new_bin = binaries()
    old, new = tcg(old_bin, cache_dir), tcg(new_bin, cache_dir)
    pin = pin_on(old_bin, HASWELL_TCG, catalog, cache_dir)
    for source, destination, leg in ((old, new, "up"), (new, old, "down")):
        verdict = check_destination(pin, destination, purpose="migrate", destination=destination.qemu_version)
        assert verdict.ok, verdict.reasons
        out = migrate_between(pin, source, destination, catalog, f"unix:{sockdir}/{leg}.sock")
        assert out["result"].status == "completed" and out["arrived"] == "paused"
        assert compare_live(pin.abi, out["live"], catalog).ok
        assert dict(out["live"].features) == dict(pin.abi.features)
        print(f"{source.qemu_version} -> {destination.qemu_version}: {out['result'].seconds * 1000:.0f} ms, "
              f"downtime {out['result'].downtime_ms} ms")


def test_a_multi_thread_7_2_pin_is_judged_on_10_0_as_start_would(catalog: Catalog, cache_dir: Path) -> None:
    """QEMU 10 shows ht (and cmp-legacy on AMD) for several threads per socket; 7.2's pin has them off."""
    old_bin, new_bin = binaries()
    new = tcg(new_bin, cache_dir)
    xml = ("<domain type='qemu'><vcpu>2</vcpu><os><type machine='pc-q35-7.2'>hvm</type></os>"
           + HASWELL_TCG.replace("</cpu>", "<topology sockets='1' cores='1' threads='2'/></cpu>") + "</domain>")
    pin = pin_on(old_bin, xml, catalog, cache_dir)
    assert pin.abi.features["ht"] is False and pin.abi.topology["threads"] == 2
    verdict = check_destination(pin, new, purpose="migrate", destination="10.0")
    if verdict.ok:
        # the readback takes ht from the topology on both releases: the real move must verify
        async def start() -> None:
            async with verified_guest(pin, new_bin, catalog, known=known_features(new)):
                pass

        run_sync(start())
        return
    assert any(r.startswith("ht:") for r in verdict.reasons), verdict.reasons

    async def start_refused() -> None:
        async with verified_guest(pin, new_bin, catalog, known=known_features(new)):
            pass

    with pytest.raises(GuestCpuError, match=r"extra features: .*ht"):
        run_sync(start_refused())


def test_a_machine_type_10_0_dropped_is_refused_naming_it(catalog: Catalog, cache_dir: Path) -> None:
    old_bin, new_bin = binaries()
    old, new = tcg(old_bin, cache_dir), tcg(new_bin, cache_dir)
    gone = sorted({m.name for m in old.machines} - {m.name for m in new.machines})
    assert "pc-i440fx-1.4" in gone
    pin = pin_on(old_bin, HASWELL_TCG, catalog, cache_dir, machine="pc-i440fx-1.4")
    verdict = check_destination(pin, new, purpose="migrate", destination="10.0")
    assert not verdict.ok and verdict.missing_machine == "pc-i440fx-1.4"


def test_a_model_only_10_0_defines_is_refused_toward_7_2(catalog: Catalog, cache_dir: Path) -> None:
    old_bin, new_bin = binaries()
    old = tcg(old_bin, cache_dir)
    pin = pin_on(new_bin, "<cpu mode='custom'><model>SierraForest-v2</model></cpu>", catalog, cache_dir)
    assert pin.abi.model == "SierraForest-v2"
    verdict = check_destination(pin, old, purpose="migrate", destination="7.2")
    assert not verdict.ok and verdict.missing_model == "SierraForest-v2"
    assert any("SierraForest-v2" in r for r in verdict.reasons)
