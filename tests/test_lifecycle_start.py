"""``start`` against the real QEMU 7.2: launch paused, verify the vCPU against the pin, refuse a different one.

A "QEMU capability change" is simulated with wrapper scripts around the real binary:

* ``-global`` options that change what a model or ``max`` means by default (as a new
  QEMU release or a distribution patch would); QEMU applies them to expansions too, so
  the capabilities probe through the wrapper sees the change;
* a wrapper that quietly drops a feature from ``-cpu`` (a QEMU that gives less than
  asked, which ``check=on`` would only warn about).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.lifecycle.define import Target, define, load_target
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.documents import read_pin, write_document
from guestcpu.lifecycle.live import PinMismatchError, read_live
from guestcpu.lifecycle.pin import Pin, pin_to_document
from guestcpu.lifecycle.start import StartPlan, plan_start, start_async
from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.offer import supported_features
from guestcpu.qemu.process import QemuProcess, QemuStartError, base_args, run_sync
from qemu_support import HASWELL_TCG, KVM_REASON, QEMU

pytestmark = pytest.mark.qemu


if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)



def make_pin(xml: str, catalog: Catalog, cache_dir: Path, binary: str | None = None, **kw: Any) -> Pin:
    kw.setdefault("accel", "tcg")
    kw.setdefault("machine", "q35")
    return define(parse_guest(xml.encode(), "guest.xml"), catalog, binary=binary, cache_dir=cache_dir, **kw)


def target_for(pin: Pin, cache_dir: Path, binary: str | None = None) -> Target:
    return load_target(binary or QEMU, pin.abi.accel, pin.abi.machine, cache_dir=cache_dir)


def verify(pin: Pin, catalog: Catalog, target: Target, *, fresh: bool = True) -> Any:
    plan = StartPlan(pin, False) if not fresh else plan_start(pin, target, catalog, fresh=True)
    return run_sync(start_async(plan, target, catalog, verify_only=True))


def wrapper(tmp_path: Path, name: str, body: str) -> str:
    """A QEMU "binary" that runs the real one with a change."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def with_globals(tmp_path: Path, name: str, *globals_: str) -> str:
    extra = " ".join(f"-global '{g}'" for g in globals_)
    return wrapper(tmp_path, name, f'exec {QEMU} "$@" {extra}')


# -- verified start ------------------------------------------------------------------------


def test_verified_start_gives_exactly_the_pin(catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    assert not pin.warnings  # TCG can give all of it
    result = verify(pin, catalog, target_for(pin, cache_dir))
    assert dict(result.live.features) == dict(pin.abi.features)
    assert result.live.identity["model-id"] == pin.abi.model_id == "Intel Core Processor (Haswell, no TSX)"
    assert result.live.identity["vendor"] == pin.abi.vendor and result.live.identity["level"] == pin.abi.level
    assert result.live.unavailable == () and not result.plan.recomputed
    assert result.launch_seconds < 5


def test_a_cpu_tcg_cannot_give_is_refused_naming_every_feature(catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin("<cpu><model>Skylake-Client-v4</model></cpu>", catalog, cache_dir)
    tcg = load_caps(QEMU, "tcg", cache_dir=cache_dir).caps
    blockers = tcg.model("Skylake-Client-v4")
    assert blockers is not None and blockers.blockers
    with pytest.raises(PinMismatchError) as info:
        verify(pin, catalog, target_for(pin, cache_dir))
    # Exactly what QEMU itself says TCG cannot give, in the pin's (QEMU's) spelling.
    assert info.value.missing == sorted(blockers.blockers)
    assert info.value.extra == [] and info.value.exit_status == 2
    assert str(info.value).startswith("guest CPU doesn't match specification: missing features: ")
    assert "the guest was stopped" in str(info.value)


def test_epyc_on_an_old_machine_type_verifies_with_its_compat_props(catalog: Catalog, cache_dir: Path) -> None:
    probe = make_pin("<cpu><model>EPYC</model></cpu>", catalog, cache_dir, machine="pc-i440fx-2.12", existing=True)
    missing = sorted(set(probe.abi.required) - supported_features(target_for(probe, cache_dir).caps))
    disables = "".join(f"<feature policy='disable' name='{name}'/>" for name in missing)
    pin = make_pin(f"<cpu><model>EPYC</model>{disables}</cpu>", catalog, cache_dir, machine="pc-i440fx-2.12",
                   existing=True)
    result = verify(pin, catalog, target_for(pin, cache_dir))
    assert result.live.props["legacy-cache"] is True and result.live.features["topoext"] is False
    assert result.live.identity["xlevel"] == 0x8000000A


@pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")
def test_kvm_verified_start_and_refusal(catalog: Catalog, cache_dir: Path) -> None:
    kvm = load_caps(QEMU, "kvm", cache_dir=cache_dir).caps
    """A model this host's KVM calls usable verifies; one it blocks is refused naming QEMU's blockers
    (both chosen from the probed capabilities, never by name)."""
    kvm = load_caps(QEMU, "kvm", cache_dir=cache_dir).caps
    versioned = [m for m in kvm.models if "-v" in m.name and m.expansion is not None and catalog.has_model(m.name)]
    usable = [m.name for m in versioned if m.usable]
    blocked = [m for m in versioned if not m.usable and m.blockers]
    if not usable and not blocked:
        pytest.skip("this KVM reports no versioned CPU model at all")
    if usable:
        pin = make_pin(f"<cpu><model>{usable[0]}</model></cpu>", catalog, cache_dir, accel="kvm", machine="pc")
        result = verify(pin, catalog, target_for(pin, cache_dir))
        assert dict(result.live.features) == dict(pin.abi.features)
    if blocked:
        model = blocked[-1]
        refused = make_pin(f"<cpu><model>{model.name}</model></cpu>", catalog, cache_dir, accel="kvm", machine="pc")
        with pytest.raises(PinMismatchError) as info:
            verify(refused, catalog, target_for(refused, cache_dir))
        assert set(info.value.missing) == set(model.blockers)
    if not usable or not blocked:
        print(f"this KVM has {len(usable)} usable and {len(blocked)} blocked versioned models: one half not checked")


# -- simulated QEMU capability changes ------------------------------------------------------


def test_a_pinned_guest_gets_exactly_its_pin_when_model_defaults_change(
    catalog: Catalog, cache_dir: Path, tmp_path: Path
) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    assert pin.abi.model == "Haswell-v2" and pin.abi.features["popcnt"] and pin.abi.features["movbe"]
    changed = with_globals(tmp_path, "qemu-new-defaults", "driver=Haswell-v2-x86_64-cpu,property=popcnt,value=off",
                           "driver=Haswell-v2-x86_64-cpu,property=movbe,value=off")

    async def loose_start() -> dict[str, bool]:
        # What a definition that is not pinned gets from that QEMU: the new defaults.
        args = [*base_args("q35", "tcg"), "-S", "-cpu", "Haswell-v2"]
        async with QemuProcess(changed, args) as qemu:
            live = await read_live(qemu, pin.abi)
            return {k: live.features[k] for k in ("popcnt", "movbe")}

    assert run_sync(loose_start()) == {"popcnt": False, "movbe": False}
    result = verify(pin, catalog, target_for(pin, cache_dir, changed))
    assert dict(result.live.features) == dict(pin.abi.features)  # exactly the pin, nothing recomputed
    assert not result.plan.recomputed


def test_a_qemu_that_gives_less_than_the_pin_is_refused(catalog: Catalog, cache_dir: Path, tmp_path: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    # Rewrites "-cpu ...,popcnt=on,..." to "popcnt=off": the vCPU quietly lacks a feature.
    sabotage = wrapper(tmp_path, "qemu-drops-popcnt", (
        'for a in "$@"; do case "$a" in *popcnt=on*) a=$(echo "$a" | sed s/popcnt=on/popcnt=off/);; esac; '
        f'set -- "$@" "$a"; shift; done; exec {QEMU} "$@"'))
    with pytest.raises(PinMismatchError) as info:
        verify(pin, catalog, target_for(pin, cache_dir, sabotage))
    assert info.value.missing == ["popcnt"] and info.value.extra == []


def test_host_model_is_recomputed_on_a_fresh_start_only(catalog: Catalog, cache_dir: Path, tmp_path: Path) -> None:
    pin = make_pin("<cpu mode='host-model'/>", catalog, cache_dir)
    assert pin.abi.features["popcnt"] is True
    # "A QEMU update": TCG's max no longer offers popcnt.
    updated = with_globals(tmp_path, "qemu-max-without-popcnt", "driver=max-x86_64-cpu,property=popcnt,value=off")
    target = target_for(pin, cache_dir, updated)
    assert "popcnt" not in set(target.caps.host_static.enabled if target.caps.host_static else ())

    fresh = plan_start(pin, target, catalog, fresh=True)
    assert fresh.recomputed and fresh.previous_fingerprint == pin.fingerprint
    assert fresh.pin.fingerprint != pin.fingerprint and fresh.pin.abi.features["popcnt"] is False
    assert {k for k, v in pin.abi.features.items() if fresh.pin.abi.features.get(k) != v} == {"popcnt"}
    result = run_sync(start_async(fresh, target, catalog, verify_only=True))
    assert result.live.features["popcnt"] is False

    # Restore or incoming migration: the pin as it is, never a recomputation.
    kept = plan_start(pin, target, catalog, fresh=False)
    assert not kept.recomputed and kept.pin is pin
    result = run_sync(start_async(kept, target, catalog, verify_only=True))
    assert result.live.features["popcnt"] is True and dict(result.live.features) == dict(pin.abi.features)


def test_custom_pin_is_never_recomputed(catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin(HASWELL_TCG, catalog, cache_dir)
    plan = plan_start(pin, target_for(pin, cache_dir), catalog, fresh=True)
    assert not plan.recomputed and plan.pin is pin


# -- the CLI ------------------------------------------------------------------------------------


def cli(args: list[str], cache_home: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False, **kw)


def test_cli_start_refusal_is_exit_2_with_one_line(catalog: Catalog, cache_dir: Path, tmp_path: Path) -> None:
    pin = make_pin("<cpu><model>Skylake-Client-v4</model></cpu>", catalog, cache_dir)
    path = tmp_path / "pin.json"
    write_document(str(path), pin_to_document(pin))
    done = cli(["start", str(path), "--verify-only"], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guestcpu: error: guest CPU doesn't match specification: "
                                                   "missing features: 3dnowprefetch, invpcid, pcid")
    assert done.stdout == ""


def test_cli_fresh_start_writes_the_recomputed_host_model_pin(
    catalog: Catalog, cache_dir: Path, tmp_path: Path
) -> None:
    pin = make_pin("<cpu mode='host-model'/>", catalog, cache_dir)
    path = tmp_path / "pin.json"
    write_document(str(path), pin_to_document(pin))
    updated = with_globals(tmp_path, "qemu-max-without-popcnt", "driver=max-x86_64-cpu,property=popcnt,value=off")
    # --verify-only recomputes but leaves the pin alone.
    done = cli(["start", str(path), "--verify-only", "--qemu", updated, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_pin(str(path)).fingerprint == pin.fingerprint
    # A real start writes the run's pin once the vCPU is verified, then runs until stopped.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "guestcpu.cli.main", "start", str(path), "--qemu", updated,
                             "--", "-m", "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("host-model: recomputed for this fresh start"), lines
        assert lines[1].startswith("verified: the vCPU is exactly the pin") and lines[2].startswith("running: QEMU pid")
        renewed = read_pin(str(path))
        assert renewed.fingerprint != pin.fingerprint and renewed.abi.features["popcnt"] is False
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 130


@pytest.mark.parametrize("mode", ["host-passthrough", "maximum", "host-model"])
def test_host_relative_modes_under_tcg_start_verified(mode: str, catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin(f"<cpu mode='{mode}'/>", catalog, cache_dir)
    result = verify(pin, catalog, target_for(pin, cache_dir))
    # Nothing changed since define: the fresh start's recomputation gives the same pin.
    assert result.plan.recomputed and result.plan.pin.fingerprint == pin.fingerprint
    assert dict(result.live.features) == dict(pin.abi.features)
    expected_cpu = "max" if mode != "host-model" else pin.abi.model
    assert result.argv[result.argv.index("-cpu") + 1].split(",")[0] == expected_cpu


@pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")
def test_kvm_host_model_verifies_and_default_cpu_is_checked_like_any_other(catalog: Catalog, cache_dir: Path) -> None:
    pin = make_pin("<cpu mode='host-model'/>", catalog, cache_dir, accel="kvm", machine="pc")
    kvm = load_caps(QEMU, "kvm", cache_dir=cache_dir).caps
    assert kvm.host_static is not None and pin.abi.vendor == kvm.host_static.get("vendor")
    try:
        result = verify(pin, catalog, target_for(pin, cache_dir))
        assert dict(result.live.features) == dict(pin.abi.features)
    except QemuStartError as died:
        # Some nested KVMs offer arch-capabilities bits they then refuse to set: QEMU itself aborts.
        if "failed to set MSR 0x10a" not in str(died):
            raise
        print(f"host-model start skipped: this host's KVM aborts QEMU setting MSR 0x10a: {died.stderr_tail}")
    # No <cpu>: the machine type's default (qemu64) is pinned and verified like any other CPU.
    default = define(parse_guest(b"<domain type='kvm'><os><type machine='pc'>hvm</type></os></domain>", "d"),
                     catalog, cache_dir=cache_dir)
    assert default.policy.default_cpu and default.abi.model == "qemu64-v1"
    qemu64 = kvm.model("qemu64-v1")
    assert qemu64 is not None
    if qemu64.usable:
        assert verify(default, catalog, target_for(default, cache_dir)).live.features == default.abi.features
    else:
        with pytest.raises(PinMismatchError) as info:
            verify(default, catalog, target_for(default, cache_dir))
        assert set(info.value.missing) == set(qemu64.blockers)


def test_topology_is_pinned_and_verified(catalog: Catalog, cache_dir: Path) -> None:
    xml = ("<domain type='qemu'><vcpu>4</vcpu><os><type machine='q35'>hvm</type></os>"
           + HASWELL_TCG.replace("</cpu>", "<topology sockets='1' cores='2' threads='2'/></cpu>") + "</domain>")
    pin = define(parse_guest(xml.encode(), "guest.xml"), catalog, cache_dir=cache_dir)
    assert pin.abi.topology == {"sockets": 1, "dies": 1, "clusters": 1, "cores": 2, "threads": 2}
    assert pin.fingerprint != make_pin(HASWELL_TCG, catalog, cache_dir).fingerprint
    result = verify(pin, catalog, target_for(pin, cache_dir))
    assert result.live.vcpus == 4 and result.mismatch.ok
    # ht comes from the topology: on in the pin (the guest's CPUID has it); the vCPU's own report of
    # it differs by QEMU release (7.2 shows it off), so it is the one feature not held against the pin
    assert pin.abi.features["ht"] is True
    assert {k: v for k, v in result.live.features.items() if k != "ht"} == {
        k: v for k, v in pin.abi.features.items() if k != "ht"}
    assert result.argv[result.argv.index("-smp") + 1] == "4,sockets=1,cores=2,threads=2"
    # Extra QEMU arguments cannot undo the pin.
    from guestcpu.errors import InputError

    with pytest.raises(InputError, match="-smp 8 would change"):
        run_sync(start_async(StartPlan(pin, False), target_for(pin, cache_dir), catalog, verify_only=True,
                             extra_args=["-smp", "8"]))
