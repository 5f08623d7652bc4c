"""The request a guest definition makes of one QEMU is computed once (``qemu.request``).

``compare --hypervisor``/``baseline --hypervisor`` (``effective_cpu``) and the pinning path
of ``define``/``run``/``start`` (``plan_request``) must ask QEMU for the same model, the same
vendor and the same on/off for every feature the definition names.  Checked on libvirt's
real guest definitions against the recorded QEMU 7.2 capabilities (offline).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.engine.compare import CompareResult
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.formats.libvirt_xml import parse_cpu
from guestcpu.lifecycle import request as lifecycle_request
from guestcpu.lifecycle.request import plan_request
from guestcpu.model.cpu import CpuDefinition, Mode, Policy
from guestcpu.model.features import iter_bits
from guestcpu.qemu import hypervisor
from guestcpu.qemu import request as qemu_request
from guestcpu.qemu.caps import QemuCaps, caps_from_document
from guestcpu.qemu.hypervisor import NotExpressibleError, effective_cpu, hypervisor_compare
from guestcpu.qemu.request import ModelNotInQemuError

DATA = Path(__file__).parent / "data"
CPUTEST = DATA / "libvirt-11.3" / "cputestdata"
GUESTS = sorted(CPUTEST.glob("x86_64-cpuid-*-guest.xml"))
#: hand-written definitions for what the corpus lacks: optional, forbid, disable, vendor_id, fallback
EXTRA = {
    "policies": "<cpu><model>Skylake-Client</model><feature policy='optional' name='avx512f'/>"
                "<feature policy='optional' name='sse4.2'/><feature policy='disable' name='aes'/>"
                "<feature policy='forbid' name='vmx'/><feature policy='force' name='ss'/></cpu>",
    "vendor-id": "<cpu><model vendor_id='AuthenticAMD'>qemu64</model><feature name='x2apic'/></cpu>",
    "amd-vendor": "<cpu><model>kvm64</model><vendor>AMD</vendor></cpu>",
    "fallback": "<cpu><model fallback='allow'>Icelake-Client</model><feature policy='disable' name='pcid'/></cpu>",
    "forbid-fallback": "<cpu><model fallback='forbid'>Icelake-Client</model></cpu>",
    "alias": "<cpu><model>Skylake-Client-IBRS</model></cpu>",
    "versioned": "<cpu><model>EPYC-Milan-v1</model><feature policy='optional' name='svm'/></cpu>",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


def recorded(accel: str) -> QemuCaps:
    name = f"caps-{accel}.json"
    return caps_from_document(json.loads((DATA / "qemu-7.2" / name).read_text()), name)


def definitions() -> list[tuple[str, CpuDefinition]]:
    found = [(path.name, parse_cpu(path.read_bytes(), path.name)) for path in GUESTS]
    found += [(name, parse_cpu(xml.encode(), name)) for name, xml in EXTRA.items()]
    return [(name, cpu) for name, cpu in found if (cpu.mode or Mode.CUSTOM) is Mode.CUSTOM]


def test_both_callers_use_the_one_request_module() -> None:
    """No second copy of the policy or version logic is left beside ``qemu.request``."""
    for module in (hypervisor, lifecycle_request):
        for gone in ("_policy_bits", "latest_common", "_fall_back"):
            assert not hasattr(module, gone), f"{module.__name__} still has its own {gone}"
    assert lifecycle_request.feature_decisions is qemu_request.feature_decisions
    assert lifecycle_request.resolve_model is qemu_request.resolve_model
    assert lifecycle_request.fall_back is qemu_request.fall_back


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_compare_judges_the_request_define_pins(accel: str, catalog: Catalog) -> None:
    caps = recorded(accel)
    machine = caps.default_machine() or caps.machines[0]
    compared = refused = 0
    for name, written in definitions():
        unknown = [f for f in written.features if catalog.feature(f.name).qemu_name not in caps.known_props]
        if any((f.policy or Policy.REQUIRE) in (Policy.REQUIRE, Policy.FORCE) for f in unknown):
            # define refuses a required feature QEMU does not know; compare calls it incompatible, naming it
            with pytest.raises(InputError, match=r"which QEMU 7\.2\.22 does not know"):
                plan_request(written, caps, catalog, machine)
            verdict = hypervisor_compare(written, caps, catalog)
            assert verdict.result is CompareResult.INCOMPATIBLE and verdict.unknown_to_qemu, name
        # libvirt's definitions name features QEMU has no property for (osxsave): judged without them
        cpu = written.with_(features=tuple(f for f in written.features if f not in unknown))
        try:
            planned = plan_request(cpu, caps, catalog, machine)
        except ModelNotInQemuError:
            # define refuses a model this QEMU lacks under fallback='forbid': so does compare
            with pytest.raises(NotExpressibleError, match="fallback='forbid'"):
                effective_cpu(cpu, caps, catalog)
            refused += 1
            continue
        except GuestCpuError:
            continue  # define's own refusals (forbid of a feature this host has, a vendor it is not)
        eff = effective_cpu(cpu, caps, catalog)
        assert planned.choice.qemu_model == eff.qemu_model, name
        # every named feature QEMU knows: define's on/off is compare's
        pinned = {catalog.feature(key).index: value for key, value in planned.props.items() if key != "vendor"}
        judged = {index: bool(eff.features >> index & 1) for index in iter_bits(eff.named)
                  if catalog.features[index].qemu_name in caps.known_props}
        assert pinned == judged, name
        required = {catalog.features[i].name for i, on in pinned.items() if on}
        disabled = {catalog.features[i].name for i, on in pinned.items() if not on}
        verdict = hypervisor_compare(cpu, caps, catalog)
        # compare's verdict is about those same features: what it names missing is among the required
        named_missing = set(catalog.names(verdict.comparison.missing_bits & eff.named))
        assert named_missing <= required and not named_missing & disabled, name
        if "vendor" in planned.props:
            assert planned.props["vendor"] == eff.vendor_string, name
        compared += 1
    assert compared >= len(GUESTS) // 2 and refused >= 1, (compared, refused)
