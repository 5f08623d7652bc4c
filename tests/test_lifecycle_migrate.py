"""Migration and restore with the pin, on this machine, with the real QEMU 7.2.

* a real live migration between two QEMU processes (the destination started from the
  same pin with ``-incoming unix:...``), under TCG: it completes and the destination's
  vCPU equals the pin;
* a real save and restore (migration to a file and ``-incoming exec:cat FILE``);
* destinations that cannot give the pin are refused before anything is sent, naming
  the features: this host under KVM for a model it blocks, and the same QEMU on
  weaker real CPUs, known from libvirt's corpus of QEMU replies recorded on them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.formats.qemu_json import split_replies
from guestcpu.lifecycle.capture import caps_on_other_cpu
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.define import define
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.live import compare_live, read_live
from guestcpu.lifecycle.migration import MigrationRefusedError, migrate, migrate_pinned, wait_incoming
from guestcpu.lifecycle.pin import Pin
from guestcpu.lifecycle.start import verified_guest
from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import known_features, supported_features
from guestcpu.qemu.process import run_sync
from qemu_support import CPUTESTDATA, HASWELL_TCG, QEMU, needs_kvm

pytestmark = pytest.mark.qemu


if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)



@pytest.fixture()
def sockdir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="gc-mig-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_pin(xml: str, catalog: Catalog, cache_dir: Path, **kw: Any) -> Pin:
    kw.setdefault("accel", "tcg")
    kw.setdefault("machine", "q35")
    return define(parse_guest(xml.encode(), "guest.xml"), catalog, cache_dir=cache_dir, **kw)


def caps(accel: str, cache_dir: Path) -> QemuCaps:
    return load_caps(QEMU, accel, cache_dir=cache_dir).caps


def corpus_host(cpu: str) -> dict[str, Any]:
    """QEMU's static expansion of ``host`` under KVM on a real CPU, as libvirt recorded it."""
    replies = split_replies((CPUTESTDATA / f"x86_64-cpuid-{cpu}.json").read_text(), cpu)
    props: dict[str, Any] = replies[0]["return"]["model"]["props"]
    return props


# -- a real live migration ---------------------------------------------------------------------


def test_live_migration_with_the_pin(catalog: Catalog, cache_dir: Path, sockdir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    tcg = caps("tcg", cache_dir)
    known = known_features(tcg)
    uri = f"unix:{sockdir}/migrate.sock"

    async def scenario() -> dict[str, Any]:
        async with verified_guest(pin, tcg.binary, catalog, known=known, extra_args=["-m", "256"], name="src") as src:
            await src.qemu.execute("cont")
            async with verified_guest(pin, tcg.binary, catalog, known=known, extra_args=["-m", "256"],
                                      incoming=uri, name="dst") as dst:
                assert (await dst.qemu.execute("query-status"))["status"] == "inmigrate"
                result = await migrate_pinned(src.qemu, pin, tcg, uri, name="dst")
                arrived = await wait_incoming(dst.qemu, timeout=30)
                live = await read_live(dst.qemu, pin.abi)
                await dst.qemu.execute("cont")
                return {
                    "result": result,
                    "arrived": arrived,
                    "live": live,
                    "dst": (await dst.qemu.execute("query-status"))["status"],
                    "src": (await src.qemu.execute("query-status"))["status"],
                }

    out = run_sync(scenario())
    assert out["result"].status == "completed" and out["result"].transferred_bytes > 0
    assert out["arrived"] == "paused" and out["dst"] == "running" and out["src"] == "postmigrate"
    live = out["live"]
    assert dict(live.features) == dict(pin.abi.features)
    assert compare_live(pin.abi, live, catalog).ok
    assert live.identity["model-id"] == pin.abi.model_id and live.props == {k: pin.abi.props[k] for k in live.props}
    print(f"live migration: {out['result'].seconds * 1000:.0f} ms wall, QEMU total {out['result'].total_time_ms} ms, "
          f"downtime {out['result'].downtime_ms} ms, {out['result'].transferred_bytes} bytes")


def test_save_and_restore_with_the_pin(catalog: Catalog, cache_dir: Path, sockdir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir, machine="pc-i440fx-2.12")
    tcg = caps("tcg", cache_dir)
    state = sockdir / "guest.state"

    async def scenario() -> Any:
        async with verified_guest(pin, tcg.binary, catalog, extra_args=["-m", "128"], name="saved") as src:
            await src.qemu.execute("cont")
            await src.qemu.execute("stop")
            saved = await migrate(src.qemu, f"exec:cat > {state}")
        assert saved.status == "completed" and state.stat().st_size > 0
        verdict = check_destination(pin, tcg, purpose="restore", destination="this host")
        assert verdict.ok, verdict.reasons
        async with verified_guest(pin, tcg.binary, catalog, extra_args=["-m", "128"],
                                  incoming=f"exec:cat {state}", name="restored") as dst:
            assert await wait_incoming(dst.qemu, timeout=30) == "paused"
            return await read_live(dst.qemu, pin.abi)

    live = run_sync(scenario())
    assert dict(live.features) == dict(pin.abi.features) and compare_live(pin.abi, live, catalog).ok


def test_refused_before_anything_is_sent(catalog: Catalog, cache_dir: Path, sockdir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    tcg = caps("tcg", cache_dir)
    assert tcg.host_static is not None
    # The same QEMU without popcnt and movbe in TCG: what the destination could give.
    weaker = caps_on_other_cpu(tcg, {k: v for k, v in tcg.host_static.props.items() if k not in ("popcnt", "movbe")})
    uri = f"unix:{sockdir}/migrate.sock"

    async def scenario() -> tuple[MigrationRefusedError, Any, Any]:
        async with verified_guest(pin, tcg.binary, catalog, extra_args=["-m", "128"], name="src") as src:
            await src.qemu.execute("cont")
            async with verified_guest(pin, tcg.binary, catalog, extra_args=["-m", "128"], incoming=uri,
                                      name="dst") as dst:
                with pytest.raises(MigrationRefusedError) as info:
                    await migrate_pinned(src.qemu, pin, weaker, uri, name="weaker host")
                return info.value, await src.qemu.execute("query-migrate"), await dst.qemu.execute("query-status")

    refused, source_migration, destination = run_sync(scenario())
    assert refused.verdict.missing == ("movbe", "popcnt") and refused.exit_status == 2
    assert str(refused).startswith("migration to weaker host refused before anything was sent: missing features: "
                                   "movbe, popcnt")
    assert source_migration == {}  # no migration was ever started
    assert destination["status"] == "inmigrate"  # and the destination received nothing


# -- destinations that cannot give the pin ------------------------------------------------------


@needs_kvm
def test_this_host_under_kvm_refuses_a_model_it_blocks(catalog: Catalog, cache_dir: Path) -> None:
    kvm = caps("kvm", cache_dir)
    pin = make_pin("<cpu><model>Skylake-Client-v4</model></cpu>", catalog, cache_dir, accel="kvm")
    verdict = check_destination(pin, kvm, purpose="migrate", destination="this host")
    entry = kvm.model("Skylake-Client-v4")
    assert entry is not None and not entry.usable
    # The refusal names exactly what QEMU itself says blocks the model on this host.
    assert set(verdict.missing) == set(entry.blockers) and not verdict.ok
    assert verdict.missing_model is None and verdict.missing_machine is None


@needs_kvm
@pytest.mark.parametrize("cpu", ["Core-i5-2500", "Core-i5-650", "Core2-E6850", "Atom-P5362"])
def test_weaker_real_cpus_are_refused_naming_the_features(cpu: str, catalog: Catalog, cache_dir: Path) -> None:
    kvm = caps("kvm", cache_dir)
    pin = make_pin("<cpu><model>Skylake-Client-v4</model></cpu>", catalog, cache_dir, accel="kvm")
    host = corpus_host(cpu)
    destination = caps_on_other_cpu(kvm, host)
    verdict = check_destination(pin, destination, purpose="migrate", destination=cpu)
    # Independently: what the pin requires that the recorded host lacks (KVM always grants topoext).
    on_there = {k for k, v in host.items() if v is True} | {"topoext"}
    expected = sorted(set(pin.abi.required) - on_there)
    assert expected and list(verdict.missing) == expected and not verdict.ok
    assert "avx2" in verdict.missing


@needs_kvm
def test_a_matching_real_cpu_is_accepted(catalog: Catalog, cache_dir: Path) -> None:
    kvm = caps("kvm", cache_dir)
    pin = make_pin("<cpu><model>Skylake-Client-v4</model></cpu>", catalog, cache_dir, accel="kvm")
    destination = caps_on_other_cpu(kvm, corpus_host("Core-i7-8700"))
    verdict = check_destination(pin, destination, purpose="migrate", destination="i7-8700")
    assert verdict.ok, verdict.reasons
    model = destination.model("Skylake-Client-v4")
    assert model is not None and model.usable


@needs_kvm
def test_derived_capabilities_reproduce_qemus_blockers_on_this_host(cache_dir: Path) -> None:
    """caps_on_other_cpu fed this host's own host expansion gives back QEMU's own blockers."""
    kvm = caps("kvm", cache_dir)
    assert kvm.host_static is not None
    same = caps_on_other_cpu(kvm, dict(kvm.host_static.props))
    for real, derived in zip(kvm.models, same.models, strict=True):
        assert set(real.blockers) == set(derived.blockers), real.name
    assert supported_features(same) == supported_features(kvm) - set(kvm.non_migratable)


def test_a_tcg_guest_goes_to_any_host_with_the_same_qemu(catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    verdict = check_destination(pin, caps("tcg", cache_dir), purpose="migrate", destination="any host")
    assert verdict.ok and any("host CPU plays no part" in n for n in verdict.notes)
    assert json.loads(json.dumps(verdict.to_json()))["ok"] is True
    # A destination without TCG capabilities at all is refused, saying so.
    none = check_destination(pin, None, purpose="migrate", destination="kvm-only", unavailable="not captured")
    assert not none.ok and "no usable TCG: not captured" in none.summary()


@needs_kvm
def test_kvm_host_passthrough_moves_only_to_an_identical_host(catalog: Catalog, cache_dir: Path) -> None:
    import re

    from guestcpu.lifecycle.define import load_target
    from guestcpu.lifecycle.gates import MsrRefusedError
    from guestcpu.lifecycle.start import plan_start, start_async
    from guestcpu.qemu.process import QemuStartError

    kvm = caps("kvm", cache_dir)
    try:
        pin = make_pin("<cpu mode='host-passthrough'/>", catalog, cache_dir, accel="kvm", machine="pc")
    except MsrRefusedError as exc:  # a nested KVM that cannot set an MSR -cpu host asks for: take the cure it names
        cure = re.search(r"(<feature [^>]+/>)", str(exc))
        assert cure is not None, str(exc)
        pin = make_pin(f"<cpu mode='host-passthrough'>{cure.group(1)}</cpu>", catalog, cache_dir, accel="kvm",
                       machine="pc")
    assert (pin.abi.mode, pin.abi.model) == ("host-passthrough", "host") and pin.host is not None
    target = load_target(QEMU, "kvm", "pc", cache_dir=cache_dir)
    try:
        result = run_sync(start_async(plan_start(pin, target, catalog, fresh=True), target, catalog,
                                      verify_only=True))
    except QemuStartError as exc:  # the nested-KVM MSR abort some hosts show for -cpu host on pc
        pytest.skip(f"-cpu host does not start on this host: {exc}")
    assert result.argv[result.argv.index("-cpu") + 1].split(",")[0] == "host"
    assert dict(result.live.features) == dict(pin.abi.features)
    assert check_destination(pin, kvm, purpose="migrate", destination="this host").ok
    other = caps_on_other_cpu(kvm, corpus_host("Core-i7-8700"))
    verdict = check_destination(pin, other, purpose="migrate", destination="i7-8700")
    assert not verdict.ok and verdict.host_differences
    # Another CPU: its identity differs (here family 6 model 158, an i7-8700) and so do its features.
    assert verdict.host_differences[0].startswith(("vendor ", "family ", "model ", "stepping "))
    assert "can only move to an identical host" in verdict.summary()


def test_cli_incoming_start_uses_the_pin_as_it_is(catalog: Catalog, cache_dir: Path, sockdir: Path,
                                                  tmp_path: Path) -> None:
    """A host-model guest migrates to a destination whose QEMU changed: the destination does not recompute."""
    import os
    import signal
    import subprocess
    import sys

    from guestcpu.lifecycle.documents import read_pin, write_document
    from guestcpu.lifecycle.pin import pin_to_document

    pin = make_pin("<cpu mode='host-model'/>", catalog, cache_dir)
    pin_file = tmp_path / "pin.json"
    write_document(str(pin_file), pin_to_document(pin))
    changed = tmp_path / "qemu-max-without-popcnt"
    changed.write_text(f"#!/bin/sh\nexec {QEMU} \"$@\" -global driver=max-x86_64-cpu,property=popcnt,value=off\n")
    changed.chmod(0o755)
    uri = f"unix:{sockdir}/incoming.sock"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    destination = subprocess.Popen(
        [sys.executable, "-m", "guestcpu.cli.main", "start", str(pin_file), "--incoming", uri, "--qemu", str(changed),
         "--", "-m", "128"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert destination.stdout is not None
        verified = destination.stdout.readline()
        assert verified.startswith(f"verified: the vCPU is exactly the pin {pin.fingerprint}"), (
            verified, destination.stderr.read() if destination.poll() is not None and destination.stderr else "")
        assert destination.stdout.readline().startswith("running: QEMU pid ")

        async def send() -> Any:
            tcg = caps("tcg", cache_dir)
            async with verified_guest(pin, tcg.binary, catalog, extra_args=["-m", "128"], name="src") as src:
                await src.qemu.execute("cont")
                return await migrate_pinned(src.qemu, pin, tcg, uri, name="destination")

        result = run_sync(send())
        assert result.status == "completed"
        assert read_pin(str(pin_file)).fingerprint == pin.fingerprint  # never recomputed on an incoming start
        assert destination.poll() is None  # the guest runs on the destination
    finally:
        os.killpg(destination.pid, signal.SIGINT)
        destination.wait(20)
