"""``define`` against the real QEMU 7.2: the pin, its fingerprint, versions per machine type, modes.

TCG always; KVM where /dev/kvm is usable (this host's nested KVM has very few
features, which is fine for pinning: a pin describes a CPU, whether or not this host
can run it).  Probes share one cache directory per session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError, InputError, UnknownNameError
from guestcpu.lifecycle.define import define
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.diff import diff_pins
from guestcpu.lifecycle.pin import Pin, pin_to_document
from guestcpu.lifecycle.versions import ModelNotInQemuError
from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import supported_features
from qemu_support import KVM_REASON, QEMU

pytestmark = pytest.mark.qemu

DATA = Path(__file__).parent / "data" / "lifecycle"

if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)


def accels() -> list[Any]:
    return [
        "tcg",
        pytest.param("kvm", marks=pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")),
    ]


def pin_of(xml: str, catalog: Catalog, cache_dir: Path, **options: Any) -> Pin:
    return define(parse_guest(xml.encode(), "guest.xml"), catalog, cache_dir=cache_dir, **options)


def caps(accel: str, cache_dir: Path) -> QemuCaps:
    return load_caps(QEMU, accel, cache_dir=cache_dir).caps


SKYLAKE = "<cpu mode='custom' match='exact'><model>Skylake-Client</model></cpu>"


# -- same definition, same pin ------------------------------------------------------------


@pytest.mark.parametrize("accel", accels())
def test_same_definition_on_two_probes_gives_the_same_pin(accel: str, catalog: Catalog, tmp_path: Path) -> None:
    xml = ("<domain type='kvm'><os><type arch='x86_64' machine='q35'>hvm</type></os><cpu mode='custom'>"
           "<model fallback='forbid'>Skylake-Client-IBRS</model><feature policy='disable' name='hle'/>"
           "<feature policy='require' name='ss'/></cpu></domain>")
    first_caps = load_caps(QEMU, accel, cache_dir=tmp_path / "a", refresh=True).caps
    second_caps = load_caps(QEMU, accel, cache_dir=tmp_path / "b", refresh=True).caps
    assert first_caps.probed_at != second_caps.probed_at  # two real probes
    one = pin_of(xml, catalog, tmp_path, accel=accel, caps=first_caps)
    two = pin_of(xml, catalog, tmp_path, accel=accel, caps=second_caps)
    assert one.fingerprint == two.fingerprint
    assert pin_to_document(one) == pin_to_document(two)
    assert one.abi.machine == "pc-q35-7.2" and one.abi.model == "Skylake-Client-v2"
    assert one.abi.features["hle"] is False and one.abi.features["ss"] is True


def test_a_changed_feature_gives_another_fingerprint(catalog: Catalog, cache_dir: Path) -> None:
    base = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="q35")
    changed = pin_of(SKYLAKE.replace("</cpu>", "<feature policy='disable' name='avx2'/></cpu>"), catalog, cache_dir,
                     accel="tcg", machine="q35")
    assert base.fingerprint != changed.fingerprint
    diff = diff_pins(base, changed)
    assert diff["fields"] == {} and diff["features"]["now_disabled"] == ["avx2"]
    assert diff["features"]["now_required"] == [] and not diff["props"]


def test_every_feature_qemu_knows_is_explicit(catalog: Catalog, cache_dir: Path) -> None:
    pin = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="q35")
    tcg = caps("tcg", cache_dir)
    assert set(pin.abi.features) == set(tcg.known_props)
    assert len(pin.abi.features) == 320 and len(pin.abi.required) > 50
    # The libvirt live form lists every catalog-named feature with check='full'.
    assert pin.libvirt_cpu.startswith("<cpu mode='custom' match='exact' check='full'>")
    named = [f for f in pin.abi.features if catalog.has_feature(f)]
    assert pin.libvirt_cpu.count("<feature ") == len(named)


# -- versions ---------------------------------------------------------------------------


def test_existing_guest_resolves_as_qemu_does_for_its_machine_type(catalog: Catalog, cache_dir: Path) -> None:
    legacy = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="pc-i440fx-4.0", existing=True)
    assert (legacy.abi.model, legacy.abi.version, legacy.resolution.rule) == ("Skylake-Client", "legacy", "legacy")
    v1 = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="pc-q35-7.2", existing=True)
    assert (v1.abi.model, v1.abi.version, v1.resolution.rule) == ("Skylake-Client-v1", 1, "v1")
    latest = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="microvm", existing=True)
    assert (latest.abi.model, latest.abi.version) == ("Skylake-Client-v4", 4)
    new = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="pc-i440fx-4.0")
    assert (new.abi.model, new.abi.version, new.resolution.rule) == ("Skylake-Client-v4", 4, "latest-common")
    # QEMU's legacy definition of Skylake-Client has v1's content (research §1.4).
    v1_on_old = pin_of(SKYLAKE.replace("Skylake-Client", "Skylake-Client-v1"), catalog, cache_dir, accel="tcg",
                       machine="pc-i440fx-4.0")
    assert legacy.abi.features == v1_on_old.abi.features and legacy.abi.model_id == v1_on_old.abi.model_id
    assert legacy.fingerprint != v1_on_old.fingerprint  # the -cpu name is part of the ABI record


@pytest.mark.parametrize(
    "machine", ["pc-i440fx-4.0", "pc-i440fx-4.1", "pc-i440fx-7.2", "pc-q35-4.0.1", "pc-q35-4.1", "q35", "microvm",
                "isapc", "pc-i440fx-2.12"],
)
def test_existing_resolution_agrees_with_the_recorded_qemu(machine: str, catalog: Catalog, cache_dir: Path) -> None:
    recorded = json.loads((DATA / "default-version-by-machine.json").read_text())[f"{machine}/tcg"]
    for name in ("Skylake-Client", "EPYC", "qemu64"):
        pin = pin_of(f"<cpu><model>{name}</model></cpu>", catalog, cache_dir, accel="tcg", machine=machine,
                     existing=True)
        expected = recorded[f"alias {name}"]
        assert pin.abi.model == (expected or name), (machine, name)
        assert pin.abi.version == ("legacy" if expected is None else int(expected.rsplit("-v", 1)[1]))
    if "model-id" in recorded:
        sky = pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine=machine, existing=True)
        assert sky.abi.model_id == recorded["model-id"]


def test_new_definition_takes_the_latest_version_both_catalog_and_qemu_have(catalog: Catalog, cache_dir: Path) -> None:
    # The catalog knows EPYC-v4 (QEMU 8.x); QEMU 7.2 stops at v3.
    assert catalog.has_model("EPYC-v4") and not caps("tcg", cache_dir).has_model("EPYC-v4")
    pin = pin_of("<cpu><model>EPYC</model></cpu>", catalog, cache_dir, accel="tcg", machine="q35")
    assert (pin.abi.model, pin.resolution.rule) == ("EPYC-v3", "latest-common")


def test_machine_type_compat_props_are_in_the_pin(catalog: Catalog, cache_dir: Path) -> None:
    """QEMU 7.2's EPYC on pc-i440fx-2.12 loses topoext, npt and nrip-save and uses the legacy caches."""
    recorded = json.loads((DATA / "expansion-compat-props-EPYC-by-machine.json").read_text())
    for machine in ("pc-i440fx-2.12", "pc-i440fx-5.2", "pc-i440fx-7.2"):
        pin = pin_of("<cpu><model>EPYC</model></cpu>", catalog, cache_dir, accel="tcg", machine=machine,
                     existing=True)
        static = recorded[f"{machine}/static"]["props"]
        full = recorded[f"{machine}/full"]["props"]
        assert pin.abi.features == {k: v for k, v in static.items() if isinstance(v, bool)}, machine
        assert (pin.abi.level, pin.abi.xlevel) == (full["level"], full["xlevel"])
        assert pin.abi.props["legacy-cache"] == full["legacy-cache"]
    old = pin_of("<cpu><model>EPYC</model></cpu>", catalog, cache_dir, accel="tcg", machine="pc-i440fx-2.12",
                 existing=True)
    assert {k: old.abi.features[k] for k in ("topoext", "npt", "nrip-save")} == {
        "topoext": False, "npt": False, "nrip-save": False}
    assert old.abi.props["legacy-cache"] is True and old.abi.xlevel == 0x8000000A


# -- default CPU and machine types ----------------------------------------------------------


def test_no_cpu_means_the_machine_types_default_cpu_made_explicit(catalog: Catalog, cache_dir: Path) -> None:
    pin = pin_of("<domain type='qemu'><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>", catalog,
                 cache_dir)
    assert pin.abi.machine == "pc-i440fx-7.2" and pin.abi.accel == "tcg"
    assert (pin.abi.model, pin.abi.version) == ("qemu64-v1", 1)
    assert pin.policy.default_cpu and pin.policy.definition == "" and pin.resolution.requested == "qemu64"
    old = pin_of("<domain type='qemu'><os><type machine='pc-i440fx-2.12'>hvm</type></os></domain>", catalog,
                 cache_dir, existing=True)
    assert (old.abi.model, old.abi.version) == ("qemu64", "legacy")


def test_unknown_machine_type_is_one_clear_error(catalog: Catalog, cache_dir: Path) -> None:
    with pytest.raises(InputError, match=r"unknown machine type 'pc-q35-7\.3' for QEMU 7\.2\.22; did you mean"):
        pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="pc-q35-7.3")
    with pytest.raises(InputError, match="machine type 'none' has no CPU"):
        pin_of(SKYLAKE, catalog, cache_dir, accel="tcg", machine="none")


# -- modes ---------------------------------------------------------------------------


def test_host_model_under_tcg_is_max_pinned_as_a_named_model(catalog: Catalog, cache_dir: Path) -> None:
    tcg = caps("tcg", cache_dir)
    pin = pin_of("<cpu mode='host-model'/>", catalog, cache_dir, accel="tcg", machine="q35")
    assert pin.abi.mode == "custom" and pin.policy.mode == "host-model" and pin.policy.recompute
    assert pin.abi.model != "max" and pin.abi.version is not None and pin.resolution.rule == "host-model"
    assert tcg.host_static is not None
    assert set(pin.abi.required) == set(tcg.host_static.enabled) & set(pin.abi.features)
    assert any("TCG's 'max'" in w for w in pin.warnings)


@pytest.mark.parametrize(("mode", "model"), [("host-passthrough", "max"), ("maximum", "max")])
def test_passthrough_modes_under_tcg(mode: str, model: str, catalog: Catalog, cache_dir: Path) -> None:
    pin = pin_of(f"<cpu mode='{mode}'/>", catalog, cache_dir, accel="tcg", machine="q35")
    assert (pin.abi.mode, pin.abi.model, pin.abi.version) == (mode, model, None)
    assert pin.policy.recompute and pin.host is not None
    assert any("only move to an identical host" in w for w in pin.warnings)
    assert f"mode='{mode}'" in pin.libvirt_cpu


def test_match_minimum_is_this_host_plus_the_listed_features(catalog: Catalog, cache_dir: Path) -> None:
    pin = pin_of("<cpu mode='custom' match='minimum'><model>qemu64</model>"
                 "<feature policy='disable' name='sse4.2'/></cpu>", catalog, cache_dir, accel="tcg", machine="q35")
    host_model = pin_of("<cpu mode='host-model'/>", catalog, cache_dir, accel="tcg", machine="q35")
    assert pin.policy.recompute and pin.policy.match == "minimum"
    assert pin.abi.features["sse4.2"] is False and host_model.abi.features["sse4.2"] is True
    assert {k for k, v in pin.abi.features.items() if v != host_model.abi.features[k]} == {"sse4.2"}


def test_fallback_allow_picks_a_model_qemu_has(catalog: Catalog, cache_dir: Path) -> None:
    xml = "<cpu><model fallback='allow'>Icelake-Client</model></cpu>"
    pin = pin_of(xml, catalog, cache_dir, accel="tcg", machine="q35")
    assert caps("tcg", cache_dir).has_model(pin.abi.model) and pin.resolution.requested == "Icelake-Client"
    assert any("has no Icelake-Client; fallback='allow' chose" in w for w in pin.warnings)
    with pytest.raises(ModelNotInQemuError, match=r"'Icelake-Client' is not provided by QEMU 7\.2\.22; did you mean"):
        pin_of(xml.replace("allow", "forbid"), catalog, cache_dir, accel="tcg", machine="q35")


def test_feature_policies(catalog: Catalog, cache_dir: Path) -> None:
    tcg_supported = supported_features(caps("tcg", cache_dir))
    assert "sse4.2" in tcg_supported and "avx512f" not in tcg_supported
    pin = pin_of("<cpu><model>qemu64</model><feature policy='optional' name='sse4.2'/>"
                 "<feature policy='optional' name='avx512f'/><feature policy='forbid' name='ssse3'/>"
                 "<feature policy='force' name='movbe'/></cpu>", catalog, cache_dir, accel="tcg", machine="q35")
    assert {k: pin.abi.features[k] for k in ("sse4.2", "avx512f", "ssse3", "movbe")} == {
        "sse4.2": True, "avx512f": False, "ssse3": False, "movbe": True}
    with pytest.raises(UnknownNameError, match="unknown CPU feature 'sse9'"):
        pin_of("<cpu><model>qemu64</model><feature name='sse9'/></cpu>", catalog, cache_dir, accel="tcg")


@pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")
def test_kvm_pins_vendor_and_checks_forbid_and_vendor_against_this_host(catalog: Catalog, cache_dir: Path) -> None:
    kvm = caps("kvm", cache_dir)
    assert kvm.host_static is not None
    host_vendor = kvm.host_static.get("vendor")
    pin = pin_of(SKYLAKE, catalog, cache_dir, accel="kvm", machine="q35")
    assert pin.abi.vendor == host_vendor  # KVM gives named models the host's vendor; the pin makes it explicit
    assert pin.abi.features.get("kvmclock") is True  # QEMU-only paravirt flags are pinned too
    # warned exactly when this host's probed caps lack something the pin requires (never assumed by name)
    lacking = set(pin.abi.required) - supported_features(kvm)
    assert any("this host under KVM cannot give this CPU now" in w for w in pin.warnings) == bool(lacking)
    offered = sorted(supported_features(kvm) & set(pin.abi.features))
    with pytest.raises(GuestCpuError, match=f"forbids feature '{offered[0]}' but this host provides it"):
        pin_of(f"<cpu><model>qemu64</model><feature policy='forbid' name='{offered[0]}'/></cpu>", catalog, cache_dir,
               accel="kvm")
    other = "AMD" if host_vendor == "GenuineIntel" else "Intel"
    with pytest.raises(GuestCpuError, match=f"requires vendor {other}"):
        pin_of(f"<cpu><model>qemu64</model><vendor>{other}</vendor></cpu>", catalog, cache_dir, accel="kvm")


@pytest.mark.parametrize(("feature", "gates"), [("rdctl-no", ["arch-capabilities"]),
                                                ("vmx-ept", ["vmx-secondary-ctls", "vmx"])])
def test_a_required_feature_whose_gate_is_off_gets_it_or_is_refused(feature: str, gates: list[str], catalog: Catalog,
                                                                    cache_dir: Path) -> None:
    """qemu64 has arch-capabilities and vmx off: a required rdctl-no/vmx-ept is never pinned disabled."""
    xml = f"<cpu mode='custom' match='exact'><model>qemu64</model><feature policy='require' name='{feature}'/></cpu>"
    pin = pin_of(xml, catalog, cache_dir, accel="tcg")
    assert pin.abi.features[feature] is True
    for gate in gates:
        assert pin.abi.features[gate] is True
        assert any(f"only with {gate}" in w and f"{gate} is enabled" in w for w in pin.warnings), pin.warnings
    disabled = xml.replace("</cpu>", f"<feature policy='disable' name='{gates[-1]}'/></cpu>")
    with pytest.raises(InputError, match=r"requires feature '.*', but QEMU turns it off on qemu64"):
        pin_of(disabled, catalog, cache_dir, accel="tcg")


@pytest.mark.parametrize("accel", accels())
def test_the_vendor_a_definition_names_is_what_qemu_is_told(accel: str, catalog: Catalog, cache_dir: Path) -> None:
    """kvm64 is an Intel-vendor model: with <vendor>AMD</vendor> the pin is AuthenticAMD (or, under KVM on a host
    of another vendor, the definition is refused)."""
    xml = "<cpu mode='custom' match='exact'><model>kvm64</model><vendor>AMD</vendor></cpu>"
    host = caps(accel, cache_dir).host_static
    if accel == "kvm" and host is not None and host.get("vendor") != "AuthenticAMD":
        with pytest.raises(GuestCpuError, match="requires vendor AMD"):
            pin_of(xml, catalog, cache_dir, accel=accel)
        return
    pin = pin_of(xml, catalog, cache_dir, accel=accel)
    assert pin.abi.vendor == "AuthenticAMD"


@pytest.mark.skipif(KVM_REASON is not None, reason=f"KVM not usable: {KVM_REASON}")
def test_a_pin_whose_msr_this_kvm_refuses_is_defined_with_a_warning_and_refused_clearly(
    catalog: Catalog, cache_dir: Path
) -> None:
    """rdctl-no makes QEMU write IA32_ARCH_CAPABILITIES: define tries the pin once; where this KVM refuses the MSR
    the pin says so, and start is one error naming the MSR (never QEMU's assertion)."""
    from guestcpu.lifecycle.define import load_target
    from guestcpu.lifecycle.gates import MsrRefusedError
    from guestcpu.lifecycle.live import PinMismatchError
    from guestcpu.lifecycle.start import StartPlan, start_async
    from guestcpu.qemu.process import run_sync

    xml = "<cpu mode='custom' match='exact'><model>qemu64</model><feature policy='require' name='rdctl-no'/></cpu>"
    pin = pin_of(xml, catalog, cache_dir, accel="kvm")
    assert pin.abi.features["arch-capabilities"] and pin.abi.features["rdctl-no"]
    warned = [w for w in pin.warnings if "will not start on this host now" in w]
    target = load_target(QEMU, "kvm", pin.abi.machine, cache_dir=cache_dir)
    if warned:
        assert "MSR 0x10a (IA32_ARCH_CAPABILITIES)" in warned[0]
        with pytest.raises(MsrRefusedError, match="KVM here refuses to set MSR 0x10a"):
            run_sync(start_async(StartPlan(pin, False), target, catalog, verify_only=True))
        return
    print("this KVM sets MSR 0x10a: the pin starts, or is refused only for features KVM lacks")
    try:  # an MsrRefusedError here would be a pin define should have warned about
        result = run_sync(start_async(StartPlan(pin, False), target, catalog, verify_only=True))
        assert result.mismatch.ok
    except PinMismatchError as exc:
        assert exc.missing  # only features this KVM lacks, each named
