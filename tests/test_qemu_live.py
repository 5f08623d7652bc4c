"""The QEMU backend against the real QEMU binaries, 7.2 and 10.x (TCG always; KVM when usable).

QEMU's own answers are read here with ``qemu.qmp``'s plain synchronous client,
independently of guestcpu's process and probe code, and compared with guestcpu's.
Probes are shared per session through one cache directory, so the whole file costs a
few probes and a few dozen short guest starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.compare import CompareResult
from guestcpu.formats.libvirt_xml import format_cpu, parse_cpu
from guestcpu.lifecycle.define import load_target
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.gates import MsrRefusedError
from guestcpu.lifecycle.live import PinMismatchError
from guestcpu.lifecycle.run import RunPlan, plan_run, run_plan
from guestcpu.lifecycle.start import StartResult
from guestcpu.lifecycle.versions import ModelNotInQemuError
from guestcpu.qemu.cache import host_facts, load_caps
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.hypervisor import hypervisor_baseline, hypervisor_compare
from guestcpu.qemu.process import QemuTimeoutError, QmpCommandError, kvm_unusable_reason
from guestcpu.qemu.s390x import baseline_models, compare_models, parse_model_spec
from qemu_support import QemuBinaries, processes_with, qemu_params, same_vendor_hosts, wait_gone

pytestmark = pytest.mark.qemu

QEMU = shutil.which("qemu-system-x86_64")
QEMU_S390X = shutil.which("qemu-system-s390x")
KVM_REASON = kvm_unusable_reason()
DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"

if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)


def accel_params() -> list[Any]:
    return [
        "tcg",
        pytest.param("kvm", marks=pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")),
    ]


# -- QEMU's own answers, read without guestcpu ---------------------------------------------
def raw_qmp(binary: str, args: list[str], commands: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Start QEMU, run ``commands`` with qemu.qmp's sync client, return the replies."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    sockdir = tempfile.mkdtemp()
    sock = os.path.join(sockdir, "qmp.sock")
    mon = QEMUMonitorProtocol(sock, server=True)
    proc = subprocess.Popen([binary, *args, "-qmp", f"unix:{sock}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        mon.accept(timeout=20)
        return [mon.cmd_raw(c, a) for c, a in commands]
    finally:
        try:
            mon.cmd("quit")
            mon.close()
        except Exception:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


_CAPS: dict[tuple[str, str], QemuCaps] = {}


@pytest.fixture(scope="session", params=qemu_params())
def qemu(request: pytest.FixtureRequest) -> QemuBinaries:
    """Each QEMU release the tests run on: the system one (7.2) and 10.x beside it."""
    binaries: QemuBinaries = request.param
    return binaries


def caps_of(binary: str, accel: str, cache_home: Path) -> QemuCaps:
    if (binary, accel) not in _CAPS:
        _CAPS[binary, accel] = load_caps(binary, accel, cache_dir=cache_home / "guestcpu").caps
    return _CAPS[binary, accel]


@pytest.fixture(scope="session")
def caps_for(cache_home: Path) -> Any:
    """The system QEMU's caps (tests that do not depend on the release)."""
    def get(accel: str) -> QemuCaps:
        assert QEMU is not None
        return caps_of(QEMU, accel, cache_home)

    return get


@pytest.fixture()
def caps_on(qemu: QemuBinaries, cache_home: Path) -> Any:
    """The caps of the QEMU release under test."""
    def get(accel: str) -> QemuCaps:
        return caps_of(qemu.x86_64, accel, cache_home)

    return get


_RAW_DEFS: dict[tuple[str, str], list[dict[str, Any]]] = {}


def qemu_definitions(accel: str, binary: str | None = None) -> list[dict[str, Any]]:
    binary = binary or QEMU
    assert binary is not None
    if (binary, accel) not in _RAW_DEFS:
        reply = raw_qmp(binary, ["-machine", f"none,accel={accel}", "-nodefaults", "-display", "none"],
                        [("query-cpu-definitions", {})])[0]
        _RAW_DEFS[binary, accel] = reply["return"]
    return _RAW_DEFS[binary, accel]


def cli(args: list[str], cache_home: Path, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)


def write_guest(tmp_path: Path, xml: str, name: str = "guest.xml") -> str:
    path = tmp_path / name
    path.write_text(xml)
    return str(path)


# -- probe == QEMU, model by model ------------------------------------------------------------
@pytest.mark.parametrize("accel", accel_params())
def test_usable_and_blockers_equal_qemus_for_every_model(accel: str, qemu: QemuBinaries, caps_on: Any,
                                                        catalog: Catalog) -> None:
    caps = caps_on(accel)
    assert caps.qemu_version.startswith(qemu.label)
    raw = qemu_definitions(accel, qemu.x86_64)
    assert len(caps.models) == len(raw) > 100
    for entry in raw:
        model = caps.model(entry["name"])
        assert model is not None, entry["name"]
        assert model.usable == (not entry["unavailable-features"]), entry["name"]
        assert model.blockers == tuple(dict.fromkeys(entry["unavailable-features"])), entry["name"]
        assert model.alias_of == entry.get("alias-of"), entry["name"]


@pytest.mark.parametrize("accel", accel_params())
def test_caps_json_cli(accel: str, caps_for: Any, cache_home: Path, catalog: Catalog) -> None:
    caps_for(accel)  # warm the cache the CLI reads
    result = cli(["caps", "--accel", accel, "--json"], cache_home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"accel", "qemu_version", "host_model", "models", "machines"} <= set(data)
    assert data["accel"] == accel and data["qemu_version"].startswith("7.2")
    assert "(hit)" in data["source"]
    raw = {e["name"]: e for e in qemu_definitions(accel)}
    for model in data["models"]:
        qemu = raw[model["name"]]
        assert model["usable"] == (not qemu["unavailable-features"])
        assert model["qemu_blockers"] == list(dict.fromkeys(qemu["unavailable-features"]))
        expected = [catalog.feature(b).name for b in model["qemu_blockers"] if catalog.has_feature(b)]
        assert model["blockers"] == list(dict.fromkeys(expected))
        assert model["alias_of"] == qemu.get("alias-of")
        assert {"name", "usable", "blockers", "alias_of", "deprecated"} <= set(model)
    host = data["host_model"]
    assert host["from"] == ("host expansion" if accel == "kvm" else "max expansion")
    assert host["model"] in raw
    pc = next(m for m in data["machines"] if m["alias"] == "pc")
    assert pc["default"] and pc["default_cpu"] == "qemu64" and pc["resolves"] == "v1"
    text = cli(["caps", "--accel", accel], cache_home)
    assert text.returncode == 0 and "host-model" in text.stdout and "usable" in text.stdout


@pytest.mark.parametrize("accel", accel_params())
def test_host_expansion_and_non_migratable_delta(accel: str, qemu: QemuBinaries, caps_on: Any,
                                                 catalog: Catalog) -> None:
    caps = caps_on(accel)
    name = "host" if accel == "kvm" else "max"
    static, static_nm = raw_qmp(qemu.x86_64, ["-machine", f"none,accel={accel}", "-nodefaults", "-display", "none"], [
        ("query-cpu-model-expansion", {"type": "static", "model": {"name": name}}),
        ("query-cpu-model-expansion", {"type": "static", "model": {"name": name, "props": {"migratable": False}}}),
    ])
    props = static["return"]["model"]["props"]
    assert sorted(caps.host_static.enabled) == sorted(k for k, v in props.items() if v is True)
    nm = {k for k, v in static_nm["return"]["model"]["props"].items() if v is True}
    assert set(caps.non_migratable) == nm - {k for k, v in props.items() if v is True}
    # what QEMU holds back for migratability is what the catalog calls non-migratable (where it knows the feature)
    for name in caps.non_migratable:
        if catalog.has_feature(name):
            assert not catalog.feature(name).migratable, name


def test_machine_resolution_matches_a_microvm_and_a_pc_4_0_process(caps_for: Any) -> None:
    caps = caps_for("tcg")
    assert QEMU is not None
    for machine, rule in (("microvm", "latest"), ("pc-i440fx-4.0", "legacy")):
        reply = raw_qmp(QEMU, ["-machine", f"{machine},accel=tcg", "-nodefaults", "-display", "none", "-S"],
                        [("query-cpu-definitions", {})])[0]["return"]
        assert caps.machine(machine).resolves == rule  # type: ignore[union-attr]
        for entry in reply:
            ours = caps.model(entry["name"])
            if ours is None or ours.alias_of is None:
                continue
            resolved, _how = caps.resolve(entry["name"], machine)
            if rule == "legacy":
                assert "alias-of" not in entry
            else:
                assert resolved == entry["alias-of"], entry["name"]


# -- verify: what the vCPU really got (run = the CPU pinned in memory, then the verified start) -----
def run_cpu(xml: str, caps: QemuCaps, catalog: Catalog, machine: str | None = None) -> tuple[RunPlan, StartResult]:
    """``run --verify-only`` through the Python API: pin in memory, start paused, hold the vCPU against the pin."""
    guest = parse_guest(xml.encode(), "guest.xml")
    target = load_target(caps.binary, caps.accel, machine, caps=caps)
    plan = plan_run(guest, target, catalog)
    return plan, run_plan(plan, target, catalog, verify_only=True)


def usable_models(caps: QemuCaps, catalog: Catalog) -> list[str]:
    return [m.name for m in caps.models
            if m.usable and not m.alias_of and m.name not in ("host", "max", "base") and catalog.has_model(m.name)]


def unusable_models(caps: QemuCaps, catalog: Catalog) -> list[str]:
    return [m.name for m in caps.models if not m.usable and not m.alias_of and m.name not in ("host", "max", "base")
            and catalog.has_model(m.name) and all(catalog.has_feature(b) for b in m.blockers)]


@pytest.mark.parametrize("accel", accel_params())
def test_every_usable_model_verifies(accel: str, caps_on: Any, catalog: Catalog) -> None:
    """Every model this host's QEMU calls usable (none assumed by name) starts and verifies, identity included."""
    caps = caps_on(accel)
    expected = usable_models(caps, catalog)
    if not expected:
        pytest.skip(f"QEMU reports no usable named CPU model under {accel} on this host")
    checked = 0
    for name in expected:
        plan, result = run_cpu(f"<cpu check='full'><model>{name}</model></cpu>", caps, catalog)
        assert result.mismatch.ok, (name, result.mismatch)
        assert result.live.identity["vendor"] == plan.pin.abi.vendor
        checked += 1
    assert checked == len(expected)


@pytest.mark.parametrize("accel", accel_params())
def test_every_unusable_model_is_refused_naming_qemus_blockers(accel: str, caps_on: Any, catalog: Catalog) -> None:
    caps = caps_on(accel)
    names = unusable_models(caps, catalog)
    if not names:
        pytest.skip(f"QEMU reports every named CPU model usable under {accel} on this host")
    for name in names[:12]:  # a dozen starts are enough; the pure test covers all models
        entry = caps.model(name)
        assert entry is not None
        with pytest.raises((PinMismatchError, MsrRefusedError)) as info:
            run_cpu(f"<cpu check='full'><model>{name}</model></cpu>", caps, catalog)
        if isinstance(info.value, MsrRefusedError):
            # a nested KVM that advertises IA32_ARCH_CAPABILITIES but refuses to set it (QEMU 10's
            # YongFeng-v1 asks for it): one clear refusal naming the MSR, before QEMU's blockers matter
            assert accel == "kvm" and "MSR 0x10a" in str(info.value)
            continue
        assert isinstance(info.value, PinMismatchError)
        expected = {catalog.feature(b).name for b in entry.blockers}
        assert {catalog.feature(m).name for m in info.value.missing} == expected, name
        assert info.value.exit_status == 2


def test_model_kvm_cannot_give_is_refused_and_tcg_verifies(tmp_path: Path, cache_home: Path, caps_for: Any,
                                                          catalog: Catalog) -> None:
    if KVM_REASON is not None:
        pytest.skip(f"KVM not usable: {KVM_REASON}")
    kvm, tcg = caps_for("kvm"), caps_for("tcg")
    # a model this host's KVM cannot give (by its own caps) that TCG can
    candidates = [n for n in unusable_models(kvm, catalog) if n in usable_models(tcg, catalog)]
    if not candidates:
        pytest.skip("this host's KVM gives every model TCG gives: no model to refuse under KVM only")
    name = candidates[0]
    guest = write_guest(tmp_path, f"<cpu mode='custom' match='exact' check='full'><model>{name}</model></cpu>")
    refused = cli(["run", guest, "--accel", "kvm", "--verify-only"], cache_home)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guestcpu: error: guest CPU doesn't match specification")
    resolved = kvm.model(kvm.resolve(name)[0])
    assert resolved is not None and resolved.blockers
    for blocker in resolved.blockers:
        assert catalog.feature(blocker).qemu_name in lines[0]
    verified = cli(["run", guest, "--accel", "tcg", "--verify-only"], cache_home)
    assert verified.returncode == 0, verified.stderr
    assert "guest CPU verified" in verified.stdout
    as_json = cli(["run", guest, "--accel", "tcg", "--verify-only", "--json"], cache_home)
    data = json.loads(as_json.stdout)
    assert data["verified"] and data["missing_features"] == [] and data["extra_features"] == []


def test_refused_under_tcg_and_verified_once_blockers_are_disabled(tmp_path: Path, cache_home: Path,
                                                                  caps_for: Any, catalog: Catalog) -> None:
    caps = caps_for("tcg")
    blockers = caps.model("Skylake-Client-v4").blockers
    guest = write_guest(tmp_path, "<cpu check='full'><model>Skylake-Client-v4</model></cpu>")
    refused = cli(["run", guest, "--accel", "tcg", "--verify-only"], cache_home)
    assert refused.returncode == 2
    assert all(catalog.feature(b).qemu_name in refused.stderr for b in blockers)
    disables = "".join(f"<feature policy='disable' name='{catalog.feature(b).name}'/>" for b in blockers)
    fixed = write_guest(tmp_path, f"<cpu check='full'><model>Skylake-Client-v4</model>{disables}</cpu>", "ok.xml")
    ok = cli(["run", fixed, "--accel", "tcg", "--verify-only"], cache_home)
    assert ok.returncode == 0, ok.stderr
    line = cli(["cmdline", fixed, "--accel", "tcg"], cache_home).stdout.strip()
    # the pin's form: versioned model, identity and every feature explicit
    assert line.startswith("-cpu Skylake-Client-v4,vendor=GenuineIntel,family=6,model=94,")
    parts = set(line.split(" ")[1].split(","))
    assert all(f"{catalog.feature(b).qemu_name}=off" in parts for b in blockers)


def test_check_partial_and_none(tmp_path: Path, caps_for: Any, catalog: Catalog) -> None:
    caps = caps_for("tcg")
    with pytest.raises(PinMismatchError, match="QEMU was not started"):
        run_cpu("<cpu check='partial'><model>Skylake-Client-v4</model></cpu>", caps, catalog)
    _, result = run_cpu("<cpu check='none'><model>Skylake-Client-v4</model></cpu>", caps, catalog)
    assert not result.mismatch.ok and "pcid" in result.mismatch.missing


def test_run_checks_identity_a_qemu_wrapper_changes(tmp_path: Path, caps_for: Any, catalog: Catalog) -> None:
    """A QEMU whose configuration turns aes off and changes the stepping is refused, naming both."""
    caps = caps_for("tcg")
    # A wrapper that edits the guest's -cpu (not the QEMU that pins it): aes off, stepping 9.
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, re, sys\n"
        "args = [re.sub(r'stepping=\\d+', 'stepping=9', a.replace(',aes=on,', ',aes=off,')) for a in sys.argv[1:]]\n"
        f"os.execv({QEMU!r}, [{QEMU!r}, *args])\n"
    )
    wrapper.chmod(0o755)
    guest = parse_guest(b"<cpu check='full'><model>Westmere-v1</model></cpu>", "guest.xml")
    target = load_target(str(wrapper), "tcg", None, caps=caps)
    plan = plan_run(guest, target, catalog)
    assert plan.pin.abi.features["aes"] is True
    with pytest.raises(PinMismatchError) as info:
        run_plan(plan, target, catalog, verify_only=True)
    assert info.value.exit_status == 2
    assert info.value.missing == ["aes"]
    assert any(d.startswith("stepping: pinned") and d.endswith("live 9") for d in info.value.mismatch.other)


@pytest.mark.parametrize("accel", accel_params())
def test_run_tells_qemu_the_vendor_the_definition_names(accel: str, tmp_path: Path, cache_home: Path,
                                                       caps_for: Any, catalog: Catalog) -> None:
    """<vendor>AMD</vendor> on kvm64 (an Intel-vendor model): QEMU is told AuthenticAMD, or the CPU is refused."""
    caps = caps_for(accel)
    guest = write_guest(tmp_path, "<cpu mode='custom' match='exact'><model>kvm64</model><vendor>AMD</vendor></cpu>")
    line = cli(["cmdline", guest, "--accel", accel], cache_home)
    host_vendor = caps.host_static.get("vendor") if caps.host_static is not None else None
    if accel == "kvm" and host_vendor != "AuthenticAMD":
        assert line.returncode == 1 and "requires vendor AMD" in line.stderr, line.stderr
        return
    assert line.returncode == 0, line.stderr
    assert ",vendor=AuthenticAMD," in line.stdout
    run = cli(["run", guest, "--accel", accel, "--verify-only", "--json"], cache_home)
    if accel == "kvm" and run.returncode == 2:
        assert "vendor" not in run.stderr  # refused for features KVM lacks here, never for the vendor
        return
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["vendor"] == "AuthenticAMD"


@pytest.mark.parametrize("accel", accel_params())
def test_host_model_verifies(accel: str, caps_on: Any, catalog: Catalog) -> None:
    caps = caps_on(accel)
    _, result = run_cpu("<cpu mode='host-model' check='full'/>", caps, catalog)
    assert result.mismatch.ok, result.mismatch


@pytest.mark.parametrize("accel", accel_params())
def test_our_baseline_starts_with_check_full(accel: str, caps_on: Any, catalog: Catalog) -> None:
    caps = caps_on(accel)
    # under KVM, real CPUs of this host's vendor (a baseline names its vendor, which the host must have)
    vendor = caps.host_static.get("vendor") if accel == "kvm" and caps.host_static is not None else None
    cpus = [parse_cpu(p.read_bytes(), p.name) for p in same_vendor_hosts(vendor if isinstance(vendor, str) else None)]
    result = hypervisor_baseline(cpus, caps, catalog)
    assert hypervisor_compare(result.cpu, caps, catalog).result is not CompareResult.INCOMPATIBLE
    xml = format_cpu(result.cpu.with_(check=None)).replace("<cpu ", "<cpu check='full' ", 1)
    _, started = run_cpu(xml, caps, catalog)
    assert started.mismatch.ok, started.mismatch


def test_a_model_this_qemu_lacks_falls_back_or_is_refused(caps_for: Any, catalog: Catalog) -> None:
    """fallback='allow' (libvirt's default) pins the closest model this QEMU has, saying so; 'forbid' refuses."""
    caps = caps_for("tcg")
    lacking = next((m.name for m in catalog.models if not caps.has_model(m.name) and m.name.startswith("Icelake")),
                   None)
    if lacking is None:
        pytest.skip("this QEMU has every Icelake model of the catalog")
    plan, _ = run_cpu(f"<cpu check='none'><model>{lacking}</model></cpu>", caps, catalog)
    assert caps.has_model(plan.pin.abi.model)
    assert any(f"has no {lacking}" in w for w in plan.pin.warnings)
    with pytest.raises(ModelNotInQemuError):
        run_cpu(f"<cpu><model fallback='forbid'>{lacking}</model></cpu>", caps, catalog)


# -- QEMU that dies, hangs, or is interrupted -----------------------------------------------
def test_qemu_dying_at_start_is_one_clear_error_with_its_stderr(tmp_path: Path, cache_home: Path,
                                                               caps_for: Any) -> None:
    caps_for("tcg")
    guest = write_guest(tmp_path, "<cpu><model>qemu64</model></cpu>")
    died = cli(["run", guest, "--accel", "tcg", "--verify-only", "--", "-device", "no-such-device"], cache_home)
    assert died.returncode == 1
    assert died.stderr.startswith("guestcpu: error: QEMU (qemu-system-x86_64) exited with status 1 during start-up")
    assert "'no-such-device' is not a valid device model name" in died.stderr
    assert "Traceback" not in died.stderr
    # extra arguments that would change the CPU are refused before QEMU starts
    refused = cli(["run", guest, "--accel", "tcg", "--verify-only", "--", "-cpu", "host"], cache_home)
    assert refused.returncode == 1 and "would change what the pin fixes" in refused.stderr


def test_cpu_host_under_this_nested_kvm(tmp_path: Path, cache_home: Path, caps_for: Any) -> None:
    """Where KVM cannot set an MSR -cpu host asks for: one error naming it, and what would start does start."""
    if KVM_REASON is not None:
        pytest.skip(f"KVM not usable: {KVM_REASON}")
    caps_for("kvm")
    guest = write_guest(tmp_path, "<cpu mode='host-passthrough' check='none'/>")
    result = cli(["run", guest, "--accel", "kvm", "--machine", "pc", "--verify-only"], cache_home)
    if result.returncode == 0:
        pytest.skip("-cpu host starts on this host's KVM (no MSR refused here): nothing to explain")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("guestcpu: error: QEMU (")
    assert "could not start this CPU: KVM here refuses to set MSR 0x" in lines[0]
    assert "Assertion" not in result.stderr
    cure = re.search(r"What would start: the same CPU with (<feature [^>]+/>)", lines[0])
    assert cure is not None, lines[0]
    fixed = write_guest(tmp_path, f"<cpu mode='host-passthrough' check='none'>{cure.group(1)}</cpu>", "fixed.xml")
    started = cli(["run", fixed, "--accel", "kvm", "--machine", "pc", "--verify-only"], cache_home)
    assert started.returncode == 0, started.stderr
    # host-model on the same host is proposed without that MSR, saying so, and verifies
    model = write_guest(tmp_path, "<cpu mode='host-model' check='full'/>", "hm.xml")
    verified = cli(["run", model, "--accel", "kvm", "--verify-only"], cache_home)
    assert verified.returncode == 0, verified.stderr
    assert "KVM here refuses to set MSR 0x" in verified.stderr and "guest CPU verified" in verified.stdout


def test_msr_abort_at_start_is_one_clear_error(tmp_path: Path, cache_home: Path, caps_for: Any) -> None:
    """The nested-KVM abort as recorded: QEMU prints two lines and dies of SIGABRT once the CPU is set up."""
    caps_for("tcg")
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -cpu "*) ;; *) exec {QEMU} "$@";; esac\n'
        "echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2\n"
        "echo \"qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion "
        "'ret == cpu->kvm_msr_buf->nmsrs' failed.\" >&2\n"
        "kill -ABRT $$\n"
    )
    fake.chmod(0o755)
    guest = write_guest(tmp_path, "<cpu check='full'><model>Westmere-v1</model></cpu>")
    result = cli(["run", guest, "--qemu", str(fake), "--accel", "tcg", "--verify-only"], cache_home)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Assertion" not in lines[0], result.stderr
    assert "KVM here refuses to set MSR 0x10a (IA32_ARCH_CAPABILITIES)" in lines[0]
    assert "What would start: the same CPU with <feature policy='disable' name='arch-capabilities'/>" in lines[0]


def test_hanging_qemu_times_out_and_leaves_no_process(tmp_path: Path) -> None:
    token = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(f"#!/bin/sh\nsleep {token} &\nsleep {token}\n")
    fake.chmod(0o755)
    start = time.monotonic()
    with pytest.raises(QemuTimeoutError, match="did not open its QMP monitor within 1 s"):
        load_caps(str(fake), "tcg", cache_dir=tmp_path / "cache", timeout=1.0)
    assert time.monotonic() - start < 8
    assert wait_gone(token) == []


def test_hanging_qemu_cli_error(tmp_path: Path) -> None:
    token = f"{700 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    fake = tmp_path / "qemu-hang"
    fake.write_text(f"#!/bin/sh\nexec sleep {token}\n")
    fake.chmod(0o755)
    result = cli(["caps", "--qemu", str(fake), "--accel", "tcg", "--timeout", "0.5"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("guestcpu: error: QEMU (") and "did not open its QMP monitor" in result.stderr
    assert wait_gone(token) == []


def test_ctrl_c_while_attached_stops_qemu(tmp_path: Path, cache_home: Path, caps_for: Any) -> None:
    caps_for("tcg")
    token = f"guestcpu-test-{uuid.uuid4().hex}"
    guest = write_guest(tmp_path, "<cpu check='full'><model>qemu64</model></cpu>")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    proc = subprocess.Popen([sys.executable, "-m", "guestcpu.cli.main", "run", guest, "--accel", "tcg", "--",
                             "-name", token], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "guest running" in line
        assert processes_with(token)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_gone(token) == []


# -- the cache against the real binary --------------------------------------------------------
@pytest.fixture()
def wrapper(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "bin" / "qemu-system-x86_64"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec {QEMU} "$@"\n')
    path.chmod(0o755)
    yield path


def test_touching_the_binary_reprobes(wrapper: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status == "missing"
    hit = load_caps(str(wrapper), "tcg", cache_dir=cache)
    assert hit.status == "hit" and hit.caps.qemu_version.startswith("7.2")
    st = wrapper.stat()
    os.utime(wrapper, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    # utime moves ctime as well (only the kernel sets ctime): both are named.
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status == "changed: ctime_ns, mtime_ns"
    wrapper.write_text(wrapper.read_text() + "# replaced\n")
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status.startswith("changed: ")
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status == "hit"


@pytest.mark.parametrize("fact", ["kernel", "microcode", "host_cpuid", "kvm_usable"])
def test_changed_host_facts_reprobe(fact: str, wrapper: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    facts = host_facts(str(wrapper.resolve()), "tcg")
    assert load_caps(str(wrapper), "tcg", cache_dir=cache, facts=facts).status == "missing"
    changed = {**facts, fact: "changed-by-test"}
    assert load_caps(str(wrapper), "tcg", cache_dir=cache, facts=changed).status == f"changed: {fact}"
    assert load_caps(str(wrapper), "tcg", cache_dir=cache, facts=changed).status == "hit"


def test_corrupt_cache_file_is_reprobed_with_a_warning(wrapper: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_caps(str(wrapper), "tcg", cache_dir=cache)
    first.path.write_bytes(first.path.read_bytes()[:1000])
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    (tmp_path / "xdg" / "guestcpu").parent.mkdir(parents=True)
    shutil.copytree(cache, tmp_path / "xdg" / "guestcpu")
    result = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "caps", "--qemu", str(wrapper),
                             "--accel", "tcg", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("guestcpu: warning: capabilities cache ") and "is corrupt" in result.stderr
    assert json.loads(result.stdout)["source"].endswith("(corrupt)")
    again = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "caps", "--qemu", str(wrapper),
                            "--accel", "tcg", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert again.stderr == "" and json.loads(again.stdout)["source"].endswith("(hit)")


def test_concurrent_probes_do_not_race(wrapper: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    statuses: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            statuses.append(load_caps(str(wrapper), "tcg", cache_dir=cache).status)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(statuses) == ["hit", "hit", "hit", "missing"]
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


def test_cache_hit_answers_without_starting_qemu(
    caps_for: Any, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Speed is the benchmark's job (bench_probe.py); here: a hit never probes QEMU."""
    caps_for("tcg")

    def no_probe(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a valid cache entry must not start QEMU")

    monkeypatch.setattr("guestcpu.qemu.cache.probe", no_probe)
    result = load_caps(QEMU, "tcg", cache_dir=cache_home / "guestcpu")
    assert result.status == "hit" and result.caps.accel == "tcg"


# -- s390x: QEMU's own answers ----------------------------------------------------------------
s390x_only = pytest.mark.skipif(QEMU_S390X is None, reason="qemu-system-s390x is not installed")
_S390X_RECORDED = json.loads((DATA / "qemu-7.2" / "s390x" / "comparisons.json").read_text())
_S390X_BASELINES = json.loads((DATA / "qemu-7.2" / "s390x" / "baselines.json").read_text())


@s390x_only
@pytest.mark.parametrize("entry", [e for e in _S390X_RECORDED if "?" not in e["modelb"]],
                         ids=lambda e: f"{e['modela']}~{e['modelb']}")
def test_s390x_compare_gives_qemus_answer(entry: dict[str, Any]) -> None:
    a, b = parse_model_spec(entry["modela"]), parse_model_spec(entry["modelb"])
    if "error" in entry["reply"]:
        with pytest.raises(QmpCommandError, match="not available for CPU model"):
            compare_models(a, b)
        return
    result = compare_models(a, b)
    assert result.result == entry["reply"]["return"]["result"]
    assert list(result.responsible_properties) == entry["reply"]["return"]["responsible-properties"]


@s390x_only
@pytest.mark.parametrize("entry", _S390X_BASELINES, ids=lambda e: f"{e['modela']}+{e['modelb']}")
def test_s390x_baseline_gives_qemus_answer(entry: dict[str, Any]) -> None:
    result = baseline_models([parse_model_spec(entry["modela"]), parse_model_spec(entry["modelb"])])
    assert result.name == entry["reply"]["return"]["model"]["name"]
    assert dict(result.props) == entry["reply"]["return"]["model"]["props"]


@s390x_only
def test_s390x_cli(tmp_path: Path) -> None:
    out = cli(["s390x-compare", "z13", "z14", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == "subset"
    base = cli(["s390x-baseline", "z14", "z196"], tmp_path)
    assert base.returncode == 0 and base.stdout.startswith("z196-base,")
    bad = cli(["s390x-compare", "z13,+vxeh", "z13"], tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("guestcpu: error: QEMU refused query-cpu-model-comparison: Feature 'vxeh' is not "
                                  "available for CPU model 'z13', it was introduced with later models. (GenericError)")


@s390x_only
def test_s390x_caps_are_probed_and_cached(tmp_path: Path) -> None:
    first = load_caps(QEMU_S390X, "tcg", arch="s390x", cache_dir=tmp_path)
    assert first.status == "missing"
    assert first.caps.model("z14") is not None and first.caps.host_static is not None
    assert load_caps(QEMU_S390X, "tcg", arch="s390x", cache_dir=tmp_path).status == "hit"
