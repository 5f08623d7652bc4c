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
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.define import define
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.live import compare_live, read_live
from guestcpu.lifecycle.migration import migrate_pinned, wait_incoming
from guestcpu.lifecycle.pin import Pin
from guestcpu.lifecycle.start import verified_guest
from guestcpu.model.cpumodel import release_key
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
                live = await read_live(dst.qemu, pin.abi, known_features(destination))
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


@pytest.mark.parametrize("maker", ["7.2", "10.0"])
def test_a_multi_thread_guest_migrates_both_ways(maker: str, catalog: Catalog, cache_dir: Path,
                                                 sockdir: Path) -> None:
    """ht (and cmp-legacy for AMD) come from the topology: QEMU 10 shows them, 7.2 sets them only in
    CPUID; the guest has them on both, so the pin has them on and the readback does not hold 7.2's
    report against it."""
    old_bin, new_bin = binaries()
    old, new = tcg(old_bin, cache_dir), tcg(new_bin, cache_dir)
    xml = ("<domain type='qemu'><vcpu>4</vcpu><os><type machine='pc-q35-7.2'>hvm</type></os>"
           + HASWELL_TCG.replace("</cpu>", "<topology sockets='1' cores='2' threads='2'/></cpu>") + "</domain>")
    pin = pin_on(old_bin if maker == "7.2" else new_bin, xml, catalog, cache_dir)
    assert pin.abi.features["ht"] is True and pin.abi.topology["threads"] == 2
    if maker == "10.0":
        # a pin made on 10.0 names properties 7.2 lacks (amd-psfd, avx10 ...): refused before sending
        verdict = check_destination(pin, old, purpose="migrate", destination=old.qemu_version)
        assert not verdict.ok and "amd-psfd" in verdict.missing_properties, verdict.reasons
        assert "ht" not in verdict.missing_properties
        return
    for source, destination, leg in ((old, new, "up"), (new, old, "down")):
        verdict = check_destination(pin, destination, purpose="migrate", destination=destination.qemu_version)
        assert verdict.ok, verdict.reasons
        out = migrate_between(pin, source, destination, catalog, f"unix:{sockdir}/{leg}.sock")
        assert out["result"].status == "completed" and out["live"].vcpus == 4
        assert compare_live(pin.abi, out["live"], catalog).ok
    # what each release reports for ht, read back from the last destination (7.2): off there
    assert out["live"].features["ht"] is (release_key(old.qemu_version) >= (10, 0, 0))


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


def test_max_on_qemu_10_pins_what_the_vcpu_has(catalog: Catalog, cache_dir: Path) -> None:
    """QEMU 10's max under TCG expands to family 0 model 0; the pin takes the started vCPU's identity."""
    _, new_bin = binaries()
    new = tcg(new_bin, cache_dir)
    assert new.host_static is not None
    expanded = (new.host_static.get("family"), new.host_static.get("model"))
    pin = pin_on(new_bin, "<domain type='qemu'><os><type machine='q35'>hvm</type></os><cpu mode='maximum'/></domain>",
                 catalog, cache_dir)
    assert (pin.abi.family, pin.abi.model_number) != (0, 0)
    if expanded == (0, 0):
        assert any("only once the vCPU exists" in w for w in pin.warnings)

    async def start() -> None:
        async with verified_guest(pin, new_bin, catalog, caps=new) as guest:
            assert guest.live.identity["family"] == pin.abi.family

    run_sync(start())
