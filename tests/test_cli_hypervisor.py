"""``guestcpu compare/baseline --hypervisor|--caps`` and ``--arch s390x``, end to end.

Judged against the real QEMU 7.2 of this machine (TCG always, KVM where usable) and
against the capabilities documents recorded from it (tests/data/qemu-7.2/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.loader import load_catalog
from guestcpu.qemu.cache import read_caps_file

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
CAPS_TCG = DATA / "qemu-7.2" / "caps-tcg.json"
QEMU = shutil.which("qemu-system-x86_64")
QEMU_S390X = shutil.which("qemu-system-s390x")

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("cache")
    return {**os.environ, "XDG_CACHE_HOME": str(home), "GUESTCPU_NO_CATALOG_CACHE": "1"}


def guestcpu(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True, timeout=300, env=env
    )


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def hosts_file(tmp_path: Path, env: dict[str, str], *names: str) -> str:
    xml = ""
    for name in names:
        out = guestcpu(["host", "--cpuid", str(CPUTESTDATA / f"x86_64-cpuid-{name}.xml")], env)
        assert out.returncode == 0, out.stderr
        xml += out.stdout
    return write(tmp_path, "hosts.xml", xml)


def test_compare_against_recorded_caps_names_qemus_blockers(tmp_path: Path, env: dict[str, str]) -> None:
    caps = read_caps_file(str(CAPS_TCG))
    catalog = load_catalog(dropin_dirs=[])
    entry = caps.model("Skylake-Client-v4")
    assert entry is not None and entry.blockers
    guest = write(tmp_path, "g.xml", "<cpu mode='custom' match='exact'><model>Skylake-Client-v4</model></cpu>")
    out = guestcpu(["compare", "--caps", str(CAPS_TCG), "--json", guest], env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["result"] == "incompatible"
    assert data["accel"] == "tcg"
    qemu_blockers = {catalog.feature(b).name for b in entry.blockers}
    assert qemu_blockers <= set(data["missing_features"])
    assert set(data["qemu_blockers"]) == qemu_blockers


def test_compare_usable_model_is_not_incompatible(tmp_path: Path, env: dict[str, str]) -> None:
    guest = write(tmp_path, "g.xml", "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>")
    out = guestcpu(["compare", "--caps", str(CAPS_TCG), "--error", guest], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(":")[0] in ("identical", "superset")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_hypervisor_baseline_is_startable(tmp_path: Path, env: dict[str, str]) -> None:
    hosts = hosts_file(tmp_path, env, "Xeon-Gold-6148", "Core-i7-8700")
    out = guestcpu(["baseline", "--hypervisor", "--accel", "tcg", "--json", hosts], env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["accel"] == "tcg" and data["qemu_model"].rsplit("-v", 1)[1].isdigit()
    result = write(tmp_path, "baseline.xml", data["xml"])
    # Every feature the baseline requires is in QEMU's offer ...
    compared = guestcpu(["compare", "--hypervisor", "--accel", "tcg", "--error", result], env)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # ... and QEMU really builds it: a check='full' start verifies.
    run = guestcpu(["run", "--accel", "tcg", "--verify-only", result], env)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_plain_baseline_may_not_be_startable_but_hypervisor_one_is(tmp_path: Path, env: dict[str, str]) -> None:
    """The libvirt-style baseline of two real CPUs requires features TCG lacks; ours never does."""
    hosts = hosts_file(tmp_path, env, "Xeon-Gold-6148", "Core-i7-8700")
    plain = guestcpu(["baseline", hosts], env)
    assert plain.returncode == 0, plain.stderr
    judged = guestcpu(["compare", "--hypervisor", "--accel", "tcg", "--json", write(tmp_path, "p.xml", plain.stdout)],
                      env)
    assert json.loads(judged.stdout)["result"] == "incompatible"


def test_compare_argument_count_is_checked(tmp_path: Path, env: dict[str, str]) -> None:
    guest = write(tmp_path, "g.xml", "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>")
    out = guestcpu(["compare", "--caps", str(CAPS_TCG), guest, guest], env)
    assert out.returncode == 1
    assert out.stderr.startswith("guestcpu: error: compare takes CPU (with --hypervisor/--caps)")


@pytest.mark.skipif(QEMU_S390X is None, reason="qemu-system-s390x is not installed (Debian qemu-system-misc)")
def test_s390x_compare_and_baseline_are_qemus_answers(env: dict[str, str]) -> None:
    from guestcpu.qemu.s390x import baseline_models, compare_models, parse_model_spec

    out = guestcpu(["compare", "--arch", "s390x", "--json", "z14", "z13"], env)
    assert out.returncode == 0, out.stderr
    ours: dict[str, Any] = json.loads(out.stdout)
    # HOST CPU, as on x86: QEMU compares the host (z14, A) with the guest (z13, B).
    direct = compare_models(parse_model_spec("z14"), parse_model_spec("z13"))
    assert ours["result"] == direct.result == "superset" and ours["verdict"] == "superset"
    assert (ours["host"], ours["guest"]) == ("z14", "z13")
    assert ours["responsible_properties"] == list(direct.responsible_properties)
    # A z13 host cannot run a z14 guest (QEMU: the host is a subset): incompatible, exit 3 with --error.
    weak = guestcpu(["compare", "--arch", "s390x", "z13", "z14", "--error"], env)
    assert weak.returncode == 3, weak.stdout + weak.stderr
    assert weak.stdout.startswith("incompatible (QEMU: the host is a subset of the guest): ")
    assert "vxeh" in weak.stdout

    out = guestcpu(["baseline", "--arch", "s390x", "--json", "z14", "z13,vx=off"], env)
    assert out.returncode == 0, out.stderr
    direct_baseline = baseline_models([parse_model_spec("z14"), parse_model_spec("z13,vx=off")])
    assert json.loads(out.stdout)["spec"] == direct_baseline.spec
    assert json.loads(out.stdout)["props"].get("vx") is not True


@pytest.mark.skipif(QEMU_S390X is None, reason="qemu-system-s390x is not installed (Debian qemu-system-misc)")
def test_caps_s390x_lists_qemus_own_models(env: dict[str, str]) -> None:
    out = guestcpu(["caps", "--arch", "s390x", "--json"], env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["arch"] == "s390x" and data["accel"] == "tcg"
    names = {m["name"] for m in data["models"]}
    assert {"z14", "z13", "gen15a"} <= names
    assert data["host_model"]["model"].endswith("-base")
    usable = [m for m in data["models"] if m["usable"]]
    assert usable and all(not m["blockers"] for m in usable)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_run_passes_the_topology_to_qemu(tmp_path: Path, env: dict[str, str]) -> None:
    guest = write(tmp_path, "g.xml", "<cpu mode='custom' match='exact'><model>qemu64</model>"
                  "<topology sockets='2' dies='1' cores='2' threads='2'/></cpu>")
    plan = guestcpu(["run", "--accel", "tcg", "--dry-run", guest], env)
    assert plan.returncode == 0, plan.stderr
    assert "-smp 8,sockets=2,cores=2,threads=2" in plan.stdout  # dies=1 is QEMU's default
    run = guestcpu(["run", "--accel", "tcg", "--verify-only", guest], env)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_hypervisor_compare_of_every_model_names_exactly_qemus_blockers(accel: str) -> None:
    """Under KVM QEMU grants topoext though host's expansion lacks it: no false EPYC blockers."""
    from guestcpu.model.cpu import CpuDefinition, Match, Mode
    from guestcpu.qemu.cache import load_caps
    from guestcpu.qemu.hypervisor import hypervisor_compare, model_blockers
    from guestcpu.qemu.process import kvm_unusable_reason

    if accel == "kvm" and (reason := kvm_unusable_reason()):
        pytest.skip(f"KVM is not usable here: {reason}")
    catalog = load_catalog(dropin_dirs=[])
    caps = load_caps(None, accel).caps
    checked = 0
    for entry in caps.models:
        if entry.name in ("host", "max", "base") or not catalog.has_model(entry.name):
            continue
        guest = CpuDefinition(mode=Mode.CUSTOM, match=Match.EXACT, model=entry.name)
        judged = hypervisor_compare(guest, caps, catalog)
        ours = set(judged.comparison.missing_features)
        # a bare name is judged as the version define pins (the newest the catalog and QEMU share)
        assert ours == set(model_blockers(caps, catalog, judged.effective.qemu_model)[0]), entry.name
        checked += 1
    assert checked > 120


def test_run_with_an_unknown_machine_type_names_close_ones(tmp_path: Path, env: dict[str, str]) -> None:
    guest = write(tmp_path, "g.xml", "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>")
    out = guestcpu(["run", "--caps", str(CAPS_TCG), "--machine", "pc-q35-7.3", "--dry-run", guest], env)
    assert out.returncode == 1
    assert out.stderr.startswith("guestcpu: error: unknown machine type 'pc-q35-7.3'")
    assert "'pc-q35-7.2'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_run_on_an_old_machine_type_expects_what_qemu_defines_there(tmp_path: Path, env: dict[str, str]) -> None:
    """pc-i440fx-1.4 turns arat off in every model: the pin says so; a guest naming arat gets it."""
    plain = write(tmp_path, "w.xml", "<cpu mode='custom' match='exact'><model>Westmere-v1</model></cpu>")
    out = guestcpu(["run", "--accel", "tcg", "--machine", "pc-i440fx-1.4", "--verify-only", "--json", plain], env)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["verified"] and "arat=off" in data["cpu"].split(",")
    named = write(tmp_path, "w2.xml", "<cpu mode='custom' match='exact'><model>Westmere-v1</model>"
                  "<feature policy='require' name='arat'/></cpu>")
    out = guestcpu(["run", "--accel", "tcg", "--machine", "pc-i440fx-1.4", "--verify-only", "--json", named], env)
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert "arat=on" in data["cpu"].split(",") and data["verified"]


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("names", [("EPYC-7601-32-Core", "Ryzen-7-1800X-Eight-Core"),
                                   ("Xeon-Gold-6148", "Core-i7-8700")])
def test_hypervisor_baseline_never_requires_a_feature_whose_gate_it_disables(
    names: tuple[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    """AMD CPUs under TCG: npt (an SVM leaf bit) is never required with svm disabled, and the result starts."""
    from guestcpu.catalog.gates import gate_of
    from guestcpu.formats.libvirt_xml import parse_cpu

    hosts = hosts_file(tmp_path, env, *names)
    out = guestcpu(["baseline", "--hypervisor", "--accel", "tcg", hosts], env)
    assert out.returncode == 0, out.stderr
    catalog = load_catalog(dropin_dirs=[])
    cpu = parse_cpu(out.stdout.encode(), "baseline")
    disabled = {f.name for f in cpu.features if f.policy is not None and f.policy.value == "disable"}
    for feature in cpu.features:
        if feature.policy is None or feature.policy.value == "require":
            assert gate_of(catalog.feature(feature.name)) not in disabled, feature.name
    run = guestcpu(["run", "--accel", "tcg", "--verify-only", write(tmp_path, "b.xml", out.stdout)], env)
    assert run.returncode == 0, run.stdout + run.stderr
