"""Feature gates and refused MSRs (pure): what QEMU clears without a word, and its MSR abort explained."""

from __future__ import annotations

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.gates import failed_msr, gate_of, msr_name, without_msr, without_ungated
from guestcpu.catalog.loader import load_catalog
from guestcpu.lifecycle.gates import msr_refusal
from guestcpu.lifecycle.pin import Abi

ABORT = [
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69",
    "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion "
    "`ret == cpu->kvm_msr_buf->nmsrs' failed.",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


@pytest.mark.parametrize(("feature", "gate"), [
    ("rdctl-no", "arch-capabilities"), ("mds-no", "arch-capabilities"), ("vmx-ept", "vmx-secondary-ctls"),
    ("vmx-secondary-ctls", "vmx"), ("vmx-ept-execonly", "vmx-ept"), ("npt", "svm"),
    ("split-lock-detect", "core-capability"), ("avx2", None), ("arch-capabilities", None),
])
def test_gate_of(feature: str, gate: str | None, catalog: Catalog) -> None:
    assert gate_of(catalog.feature(feature)) == gate
    if gate is not None:
        assert catalog.has_feature(gate)


def test_without_ungated_drops_chains(catalog: Catalog) -> None:
    bits = catalog.bits(["npt", "nrip-save", "vmx-ept", "vmx-secondary-ctls", "avx2"])
    assert catalog.names(without_ungated(bits, catalog)) == ["avx2"]
    with_gates = bits | catalog.bits(["svm", "vmx"])
    assert without_ungated(with_gates, catalog) == with_gates


def test_failed_msr_and_what_stops_qemu_setting_it(catalog: Catalog) -> None:
    assert failed_msr(ABORT) == 0x10A and failed_msr(["qemu: -device foo: not a device"]) is None
    assert msr_name(0x10A) == "MSR 0x10a (IA32_ARCH_CAPABILITIES)"
    off = without_msr(0x10A, catalog, [])
    assert off["arch-capabilities"] is False and off["rdctl-no"] is False and set(off.values()) == {False}


def test_msr_refusal_names_msr_features_and_cure(catalog: Catalog) -> None:
    abi = Abi(arch="x86_64", accel="kvm", machine="pc-q35-7.2", mode="host-passthrough", model="host", version=None,
              vendor="AuthenticAMD", family=26, model_number=2, stepping=1, level=16, xlevel=0x80000028,
              model_id="AMD EPYC", features={"arch-capabilities": True, "rdctl-no": True, "mds-no": True, "avx2": True})
    error = msr_refusal(ABORT, abi, catalog, "qemu-system-x86_64, kvm, pc-q35-7.2")
    assert error is not None
    text = str(error)
    assert "KVM here refuses to set MSR 0x10a (IA32_ARCH_CAPABILITIES)" in text
    assert "arch-capabilities, rdctl-no, mds-no" in text and "avx2" not in text
    assert "<feature policy='disable' name='arch-capabilities'/>" in text
    assert msr_refusal(["qemu: something else"], abi, catalog, "x") is None
