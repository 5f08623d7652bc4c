"""The pin document, its fingerprint, the -cpu arguments and the destination rules, without QEMU.

Everything here is pure: pins and capabilities are built by hand, so each rule is
shown on the smallest input that exercises it.  The same rules against the real QEMU
are in test_lifecycle_define.py, test_lifecycle_start.py and test_lifecycle_migrate.py.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.formats.libvirt_xml import parse_cpu
from guestcpu.lifecycle.argv import cpu_model_arg, guest_args, model_id_global
from guestcpu.lifecycle.compat import check_destination
from guestcpu.lifecycle.definition import parse_guest
from guestcpu.lifecycle.diff import diff_pins
from guestcpu.lifecycle.libvirt_form import libvirt_xml
from guestcpu.lifecycle.pin import (
    Abi,
    Pin,
    PinError,
    PinPolicy,
    Resolution,
    fingerprint_of,
    loads_pin,
    pin_from_document,
    pin_to_document,
)
from guestcpu.lifecycle.versions import machine_choice, resolve_model
from guestcpu.model.cpu import Mode, Policy
from guestcpu.qemu.caps import Expansion, MachineCaps, ModelCaps, QemuCaps, machine_resolution

FEATURES = {"sse4.2": True, "avx2": True, "hle": False, "kvmclock": True, "lahf-lm": True, "invtsc": False}


def make_abi(**changes: Any) -> Abi:
    fields: dict[str, Any] = {
        "arch": "x86_64",
        "accel": "kvm",
        "machine": "pc-q35-7.2",
        "mode": "custom",
        "model": "Skylake-Client-v2",
        "version": 2,
        "vendor": "GenuineIntel",
        "family": 6,
        "model_number": 94,
        "stepping": 3,
        "level": 13,
        "xlevel": 0x80000008,
        "model_id": "Intel Core Processor (Skylake, IBRS)",
        "features": dict(FEATURES),
        "props": {"legacy-cache": True, "xlevel2": 0},
    }
    fields.update(changes)
    return Abi(**fields)


def make_pin(abi: Abi | None = None, **policy: Any) -> Pin:
    return Pin(
        abi=abi or make_abi(),
        policy=PinPolicy(mode=policy.pop("mode", "custom"), match=policy.pop("match", "exact"), **policy),
        resolution=Resolution("Skylake-Client-IBRS", "Skylake-Client-v2", "alias"),
        made_with={"qemu_version": "7.2.22", "binary": "/usr/bin/qemu-system-x86_64"},
    )


def make_caps(
    *,
    host: dict[str, Any] | None = None,
    models: dict[str, tuple[str | None, list[str]]] | None = None,
    machines: tuple[str, ...] = ("pc-q35-7.2", "pc-i440fx-4.0", "microvm"),
    accel: str = "kvm",
    non_migratable: tuple[str, ...] = ("invtsc",),
) -> QemuCaps:
    """Capabilities by hand: ``models`` is name -> (alias-of, blockers)."""
    host_props = host if host is not None else {
        "vendor": "GenuineIntel", "family": 6, "model": 94, "stepping": 3, "model-id": "Host",
        **{name: True for name in FEATURES if name != "invtsc"},
    }
    models = models if models is not None else {
        "Skylake-Client": ("Skylake-Client-v1", []),
        "Skylake-Client-IBRS": ("Skylake-Client-v2", []),
        **{f"Skylake-Client-v{n}": (None, []) for n in (1, 2, 3, 4)},
        "host": (None, []),
        "max": (None, []),
    }
    return QemuCaps(
        arch="x86_64",
        accel=accel,
        binary="/usr/bin/qemu-system-x86_64",
        qemu_version="7.2.22",
        package="",
        machines=tuple(MachineCaps(m, resolves=machine_resolution(m)) for m in machines),
        models=tuple(ModelCaps(n, not b, tuple(b), alias_of=a) for n, (a, b) in models.items()),
        host_static=Expansion("base", host_props),
        host_full=None,
        non_migratable=non_migratable,
        known_props=frozenset(FEATURES),
    )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


# -- fingerprint and document ----------------------------------------------------------


def test_fingerprint_is_a_hash_of_the_canonical_abi() -> None:
    abi = make_abi()
    assert abi.fingerprint.startswith("sha256:") and len(abi.fingerprint) == 7 + 64
    # Insertion order of features and props does not matter: the canonical form is sorted.
    shuffled = make_abi(features=dict(reversed(list(FEATURES.items()))), props={"xlevel2": 0, "legacy-cache": True})
    assert shuffled.fingerprint == abi.fingerprint
    assert fingerprint_of(json.loads(json.dumps(abi.to_json()))) == abi.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"features": {**FEATURES, "hle": True}},
        {"features": {**FEATURES, "avx512f": False}},
        {"version": 3},
        {"model": "Skylake-Client-v3"},
        {"machine": "pc-q35-7.1"},
        {"accel": "tcg"},
        {"vendor": "AuthenticAMD"},
        {"stepping": 4},
        {"level": 22},
        {"xlevel": 0x80000021},
        {"model_id": "Intel Core Processor (Skylake)"},
        {"props": {"legacy-cache": False, "xlevel2": 0}},
        {"topology": {"sockets": 1, "dies": 1, "clusters": 1, "cores": 2, "threads": 1}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_abi_change_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert make_abi(**change).fingerprint != make_abi().fingerprint


def test_provenance_and_policy_are_not_abi() -> None:
    one = make_pin()
    other = Pin(one.abi, PinPolicy("host-model", recompute=True), Resolution(None, "x", "host-model"),
                {"qemu_version": "8.2.0"})
    assert one.fingerprint == other.fingerprint


def test_document_round_trip() -> None:
    pin = make_pin(definition="<cpu/>", existing=True)
    doc = json.loads(json.dumps(pin_to_document(pin)))
    assert doc["schema"] == "guestcpu/pin" and doc["schema_version"] == 1
    assert doc["abi"]["features"]["hle"] == "disable" and doc["abi"]["features"]["avx2"] == "require"
    back = pin_from_document(doc, "doc")
    assert back.abi == pin.abi and back.fingerprint == pin.fingerprint
    assert back.policy == pin.policy and back.resolution == pin.resolution


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["abi"]["features"].__setitem__("hle", "require"),
        lambda d: d["abi"]["features"].pop("avx2"),
        lambda d: d["abi"].__setitem__("model_id", "Fast CPU"),
        lambda d: d["abi"]["props"].__setitem__("legacy-cache", False),
        lambda d: d.__setitem__("fingerprint", "sha256:" + "0" * 64),
    ],
    ids=["feature-flipped", "feature-removed", "model-id", "prop", "fingerprint"],
)
def test_a_pin_edited_by_hand_is_refused(edit: Any) -> None:
    doc = pin_to_document(make_pin())
    edited = copy.deepcopy(doc)
    edit(edited)
    with pytest.raises(PinError, match=r"fingerprint does not match.*edited by hand"):
        pin_from_document(edited, "PIN.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__setitem__("schema_version", 2), "pin schema version 2; this guestcpu reads version 1"),
        (lambda d: d.__setitem__("schema", "guestcpu/host-capture"), "it is a 'guestcpu/host-capture' document"),
        (lambda d: d["abi"]["features"].__setitem__("hle", "optional"),
         'damaged at $.abi.features.hle: expected one of "require", "disable", found "optional"'),
        (lambda d: d["abi"].__setitem__("family", "six"), 'damaged at $.abi.family: expected integer, found "six"'),
        (lambda d: d["abi"].__setitem__("family", True), "damaged at $.abi.family: expected integer, found true"),
        (lambda d: d["abi"].pop("machine"), "damaged at $.abi: member 'machine' is missing"),
        (lambda d: d["abi"].__setitem__("mode", "host-model"),
         'damaged at $.abi.mode: expected one of "custom", "host-passthrough", "maximum", found "host-model"'),
        (lambda d: d["abi"]["topology"].__setitem__("cores", 0), "damaged at $.abi.topology.cores: 0 is less than"),
        (lambda d: d["abi"].__setitem__("surprise", 1), "damaged at $.abi: Additional properties are not allowed"),
        (lambda d: d["policy"].__setitem__("mode", 7), "damaged at $.policy.mode: expected one of"),
        (lambda d: d.pop("seal"), "damaged at $: member 'seal' is missing"),
    ],
)
def test_bad_pins_get_one_clear_message(edit: Any, message: str) -> None:
    doc = pin_to_document(make_pin())
    edit(doc)
    with pytest.raises(PinError, match=re.escape(message)):
        pin_from_document(doc, "PIN.json")
    with pytest.raises(PinError, match="not valid JSON"):
        loads_pin("{oops", "PIN.json")


def test_a_passthrough_pin_with_its_requests_round_trips() -> None:
    abi = make_abi(mode="host-passthrough", model="host", props={"legacy-cache": False,
                                                                "requested-features": {"vmx": False}})
    pin = Pin(abi, PinPolicy("host-passthrough"), Resolution(None, "host", "passthrough"),
              {"qemu_version": "7.2.22"}, host={"name": "host", "props": {"vendor": "AuthenticAMD", "aes": True}})
    back = pin_from_document(json.loads(json.dumps(pin_to_document(pin))), "doc")
    assert back.abi == abi and back.host == pin.host and back.seal == pin.seal
    doc = pin_to_document(pin)
    doc["abi"]["props"]["requested-features"] = {"vmx": "off"}
    with pytest.raises(PinError, match=re.escape("damaged at $.abi.props.requested-features.vmx: expected boolean")):
        pin_from_document(doc, "doc")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["policy"].__setitem__("mode", "host-model"),
        lambda d: d["policy"].__setitem__("recompute_on_fresh_start", True),
        lambda d: d["policy"].__setitem__("match", "minimum"),
        lambda d: d["policy"].__setitem__("definition", "<cpu mode='host-model'/>"),
        lambda d: d.__setitem__("host", {"name": "base", "props": {"avx512f": True}}),
    ],
    ids=["mode-host-model", "recompute", "match", "definition", "host"],
)
def test_an_edited_policy_or_host_is_refused(edit: Any) -> None:
    """The policy decides what a start gives (host-model is recomputed): the seal covers it."""
    doc = pin_to_document(make_pin())
    edit(doc)
    with pytest.raises(PinError, match=r"seal does not match.*edited by hand"):
        pin_from_document(doc, "PIN.json")


# -- the libvirt form and -cpu ---------------------------------------------------------------


def test_libvirt_form_lists_every_catalog_feature(catalog: Catalog) -> None:
    cpu = parse_cpu(libvirt_xml(make_abi(), catalog).encode(), "xml")
    assert (cpu.mode, cpu.match.value if cpu.match else None, cpu.check.value if cpu.check else None) == (
        Mode.CUSTOM, "exact", "full")
    assert cpu.model == "Skylake-Client-v2" and cpu.vendor_id == "GenuineIntel"
    assert cpu.fallback is not None and cpu.fallback.value == "forbid"
    policies = {f.name: f.policy for f in cpu.features}
    # QEMU spellings become libvirt's (lahf-lm -> lahf_lm); QEMU-only kvmclock has no libvirt name.
    assert policies == {"sse4.2": Policy.REQUIRE, "avx2": Policy.REQUIRE, "hle": Policy.DISABLE,
                        "lahf_lm": Policy.REQUIRE, "invtsc": Policy.DISABLE}
    assert [f.name for f in cpu.features] == sorted(policies)
    assert cpu.topology is not None and (cpu.topology.sockets, cpu.topology.cores, cpu.topology.threads) == (1, 1, 1)
    passthrough = libvirt_xml(make_abi(mode="host-passthrough", model="host"), catalog)
    assert passthrough.startswith("<cpu mode='host-passthrough' check='full' migratable='on'>\n  <topology ")


def test_model_id_global_names_the_cpu_type_the_probe_reported() -> None:
    """The -global driver is QEMU's QOM type name for the model (from query-cpu-definitions), not a guess."""
    from dataclasses import replace

    from guestcpu.lifecycle.argv import cpu_args

    caps = make_caps()
    renamed = tuple(replace(m, typename="Skylake-Client-v2-i386-cpu") if m.name == "Skylake-Client-v2" else m
                    for m in caps.models)
    caps = replace(caps, models=renamed)
    args = cpu_args(make_abi(), caps)
    assert args[0] == "-cpu" and args[2] == "-global"
    assert args[3].startswith("driver=Skylake-Client-v2-i386-cpu,property=model-id,")


def test_cpu_argument_makes_every_property_explicit() -> None:
    arg = cpu_model_arg(make_abi())
    parts = arg.split(",")
    assert parts[0] == "Skylake-Client-v2"
    assert parts[1:7] == ["vendor=GenuineIntel", "family=6", "model=94", "stepping=3", "level=13",
                          f"xlevel={0x80000008}"]
    assert "xlevel2=0" in parts and "legacy-cache=on" in parts
    assert {p for p in parts if p.split("=")[0] in FEATURES} == {
        "sse4.2=on", "avx2=on", "hle=off", "kvmclock=on", "lahf-lm=on", "invtsc=off"}
    # The model-id has commas: it goes through -global, where ",," is an escaped comma.
    assert model_id_global(make_abi()) == [
        "-global", "driver=Skylake-Client-v2-x86_64-cpu,property=model-id,value=Intel Core Processor (Skylake,, IBRS)"]
    args = guest_args(make_abi())
    assert args[:2] == ["-machine", "pc-q35-7.2,accel=kvm"] and "-S" in args
    assert args[args.index("-smp") + 1] == "1,sockets=1,cores=1,threads=1"
    four = make_abi(topology={"sockets": 1, "dies": 2, "clusters": 1, "cores": 2, "threads": 1})
    assert four.vcpus == 4
    smp = guest_args(four)
    assert smp[smp.index("-smp") + 1] == "4,sockets=1,dies=2,cores=2,threads=1"  # no clusters: x86 7.2 has none


@pytest.mark.parametrize(
    "extra",
    [["-cpu", "max"], ["-smp", "8"], ["-machine", "q35"], ["-M", "pc"], ["--accel", "tcg"], ["-enable-kvm"],
     ["-global", "driver=Haswell-v2-x86_64-cpu,property=avx2,value=off"], ["-global", "max-x86_64-cpu.pmu=on"]],
)
def test_extra_qemu_arguments_cannot_override_the_pin(extra: list[str]) -> None:
    from guestcpu.errors import InputError
    from guestcpu.lifecycle.argv import check_extra_args

    with pytest.raises(InputError, match="would change what the pin fixes"):
        check_extra_args(["-m", "1G", *extra])
    check_extra_args(["-m", "1G", "-global", "kvm-pit.lost_tick_policy=delay", "-drive", "file=disk.img"])


def test_cpu_argument_leaves_out_disabled_features_the_qemu_does_not_know() -> None:
    arg = cpu_model_arg(make_abi(), known=set(FEATURES) - {"invtsc", "kvmclock"})
    assert "invtsc" not in arg  # off anyway
    assert "kvmclock=on" in arg  # required: kept, so QEMU fails loudly rather than dropping it


def test_passthrough_modes_are_host_or_max() -> None:
    assert cpu_model_arg(make_abi(mode="host-passthrough", model="host")) == "host"
    assert cpu_model_arg(make_abi(mode="host-passthrough", model="max", accel="tcg")) == "max"
    assert cpu_model_arg(make_abi(mode="maximum", model="max")) == "max"
    requested = make_abi(mode="host-passthrough", model="host", props={"requested-features": {"avx2": False}})
    assert cpu_model_arg(requested) == "host,avx2=off"
    assert model_id_global(requested) == []


# -- versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "existing", "expected"),
    [
        ("pc-i440fx-4.0", True, ("Skylake-Client", "legacy", "legacy")),
        ("pc-q35-7.2", True, ("Skylake-Client-v1", 1, "v1")),
        ("microvm", True, ("Skylake-Client-v4", 4, "latest")),
        ("pc-i440fx-4.0", False, ("Skylake-Client-v4", 4, "latest-common")),
        ("pc-q35-7.2", False, ("Skylake-Client-v4", 4, "latest-common")),
    ],
)
def test_version_rules(machine: str, existing: bool, expected: tuple[Any, ...], catalog: Catalog) -> None:
    caps = make_caps()
    found = caps.machine(machine)
    assert found is not None
    choice = resolve_model("Skylake-Client", caps, catalog, existing=existing, machine=found)
    assert (choice.qemu_model, choice.version, choice.rule) == expected


def test_named_variants_and_explicit_versions_are_fixed(catalog: Catalog) -> None:
    caps = make_caps()
    for machine in caps.machines:
        for existing in (False, True):
            alias = resolve_model("Skylake-Client-IBRS", caps, catalog, existing=existing, machine=machine)
            assert (alias.qemu_model, alias.rule) == ("Skylake-Client-v2", "alias")
            explicit = resolve_model("Skylake-Client-v3", caps, catalog, existing=existing, machine=machine)
            assert (explicit.qemu_model, explicit.version, explicit.rule) == ("Skylake-Client-v3", 3, "explicit")


def test_latest_means_latest_common_to_catalog_and_qemu(catalog: Catalog) -> None:
    # A QEMU that only has v1 and v2: the newest both have is v2.
    caps = make_caps(models={"Skylake-Client": ("Skylake-Client-v1", []), "Skylake-Client-v1": (None, []),
                             "Skylake-Client-v2": (None, [])})
    machine = caps.machine("pc-q35-7.2")
    assert machine is not None
    assert resolve_model("Skylake-Client", caps, catalog, existing=False, machine=machine).qemu_model == (
        "Skylake-Client-v2")
    assert machine_choice("Skylake-Client", caps, "latest").qemu_model == "Skylake-Client-v2"


def test_a_measured_answer_beats_the_rule(catalog: Catalog) -> None:
    caps = make_caps()
    machine = caps.machine("pc-q35-7.2")
    assert machine is not None
    choice = resolve_model("Skylake-Client", caps, catalog, existing=True, machine=machine,
                           machine_aliases={"Skylake-Client": "Skylake-Client-v3"})
    assert (choice.qemu_model, choice.rule) == ("Skylake-Client-v3", "measured")
    assert "QEMU's answer is pinned" in choice.notes[0]


# -- destination checks (pure) ------------------------------------------------------------


def test_destination_that_gives_everything_is_accepted() -> None:
    verdict = check_destination(make_pin(), make_caps(), purpose="migrate", destination="b")
    assert verdict.ok, verdict.reasons
    assert "OK" in verdict.summary()


def test_destination_missing_features_model_and_machine_is_refused_naming_them() -> None:
    caps = make_caps(
        host={"vendor": "GenuineIntel", "family": 6, "model": 60, "stepping": 1, "sse4.2": True, "kvmclock": True},
        models={"Haswell-v1": (None, [])},
        machines=("pc-q35-6.2",),
    )
    verdict = check_destination(make_pin(), caps, purpose="migrate", destination="old-host")
    assert not verdict.ok
    assert verdict.missing == ("avx2", "lahf-lm")
    assert verdict.missing_model == "Skylake-Client-v2" and verdict.missing_machine == "pc-q35-7.2"
    summary = verdict.summary()
    assert summary.startswith("migration to old-host refused before anything was sent")
    assert "missing features: avx2, lahf-lm" in summary and "no CPU model Skylake-Client-v2" in summary


def test_no_such_accelerator_at_the_destination() -> None:
    verdict = check_destination(make_pin(), None, purpose="restore", destination="b", unavailable="no /dev/kvm")
    assert not verdict.ok and verdict.blockers == ("the destination has no usable KVM: no /dev/kvm",)


def test_invtsc_blocks_migration_but_not_restore() -> None:
    pin = make_pin(make_abi(features={**FEATURES, "invtsc": True}))
    caps = make_caps(host={"vendor": "GenuineIntel", **{n: True for n in FEATURES}})
    assert check_destination(pin, caps, purpose="migrate", destination="b").non_migratable == ("invtsc",)
    assert check_destination(pin, caps, purpose="restore", destination="b").ok


def test_passthrough_moves_only_to_an_identical_host() -> None:
    caps = make_caps()
    assert caps.host_static is not None
    pin = Pin(make_abi(mode="host-passthrough", model="host"), PinPolicy("host-passthrough", recompute=True),
              Resolution("host", "host", "passthrough"), {"qemu_version": "7.2.22"}, host=caps.host_static.to_json())
    assert check_destination(pin, caps, purpose="migrate", destination="twin").ok
    other = make_caps(host={**caps.host_static.props, "model": 85, "avx512f": True})
    verdict = check_destination(pin, other, purpose="migrate", destination="other")
    assert verdict.host_differences == ("model 94 -> 85", "also has avx512f")
    assert "can only move to an identical host" in verdict.summary()
    # A fresh start recomputes a host-relative CPU: it starts anywhere.
    assert check_destination(pin, other, purpose="start", destination="other").ok


def test_strict_match_refuses_a_destination_with_more() -> None:
    pin = make_pin(match="strict")
    caps = make_caps(host={"vendor": "GenuineIntel", **{n: True for n in FEATURES}})
    verdict = check_destination(pin, caps, purpose="migrate", destination="b")
    assert verdict.extra == ("hle", "invtsc")
    assert check_destination(make_pin(), caps, purpose="migrate", destination="b").ok


# -- diff of pins and guest definitions ------------------------------------------------------


def test_diff_pins_names_each_change() -> None:
    old = make_pin()
    new = make_pin(make_abi(version=4, model="Skylake-Client-v4",
                            features={**FEATURES, "hle": True, "avx2": False, "avx512f": False}))
    result = diff_pins(old, new)
    assert not result["same_abi"]
    assert result["fields"] == {"model": ["Skylake-Client-v2", "Skylake-Client-v4"], "version": [2, 4]}
    assert result["features"] == {"now_required": ["hle"], "now_disabled": ["avx2"], "only_in_old": {},
                                  "only_in_new": {"avx512f": "disable"}}
    assert diff_pins(old, make_pin())["same_abi"]


def test_guest_definition_from_domain_xml_or_cpu() -> None:
    domain = parse_guest(
        b"<domain type='kvm'><name>db</name><os><type arch='x86_64' machine='pc-i440fx-2.12'>hvm</type></os>"
        b"<cpu mode='custom'><model>EPYC</model></cpu></domain>", "d.xml")
    assert (domain.name, domain.machine, domain.accel, domain.cpu and domain.cpu.model) == (
        "db", "pc-i440fx-2.12", "kvm", "EPYC")
    no_cpu = parse_guest(b"<domain type='qemu'><os><type machine='q35'>hvm</type></os></domain>", "d.xml")
    assert no_cpu.cpu is None and no_cpu.accel == "tcg"
    topology_only = parse_guest(b"<domain><cpu><topology sockets='1' cores='2' threads='1'/></cpu></domain>", "d")
    assert topology_only.cpu is None
    bare = parse_guest(b"<cpu mode='host-model'/>", "c.xml")
    assert bare.cpu is not None and bare.cpu.mode is Mode.HOST_MODEL and bare.machine is None
    assert bare.topology is None
    vcpus = parse_guest(b"<domain><vcpu placement='static'>4</vcpu></domain>", "d")
    assert vcpus.topology is not None and (vcpus.topology.sockets, vcpus.topology.cores) == (4, 1)  # as libvirt
    laid_out = parse_guest(b"<domain><vcpu>4</vcpu><cpu><topology sockets='1' cores='2' threads='2'/></cpu></domain>",
                           "d")
    assert laid_out.topology is not None and (laid_out.topology.cores, laid_out.topology.threads) == (2, 2)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<domain type='xen'/>", "domain type 'xen' is not a QEMU guest"),
        (b"<domain><os><type arch='aarch64'>hvm</type></os></domain>", "guest arch 'aarch64' is not supported"),
        (b"<capabilities/>", "expected a libvirt <domain> or a guest <cpu>"),
        (b"<domain><cpu><feature name='avx'/></cpu></domain>", "lists features but no <model>"),
        (b"<domain", "not well-formed XML"),
        (b"<domain><vcpu>6</vcpu><cpu><topology sockets='1' cores='2' threads='2'/></cpu></domain>",
         "<vcpu> is 6 but the <topology> gives 4 vCPUs"),
        (b"<domain><vcpu>many</vcpu></domain>", "is not a number of vCPUs"),
    ],
)
def test_bad_guest_definitions(xml: bytes, message: str) -> None:
    from guestcpu.errors import InputError

    with pytest.raises(InputError, match=message):
        parse_guest(xml, "guest.xml")


def test_passthrough_feature_requests_are_judged_as_properties_not_the_request_key() -> None:
    """A host-passthrough pin's own requests (``requested-features``) are checked by feature name at the destination."""
    from dataclasses import replace

    from guestcpu.lifecycle.abi import REQUESTED_KEY
    from guestcpu.lifecycle.compat import absent_properties

    abi = make_abi(mode="host-passthrough", model="host", props={REQUESTED_KEY: {"arch-capabilities": False}})
    caps = replace(make_caps(), cpu_properties=frozenset({*FEATURES, "vendor"}))
    known = frozenset(FEATURES)
    assert absent_properties(make_pin(abi, mode="host-passthrough"), caps, known) == {"arch-capabilities"}
    caps = replace(caps, cpu_properties=frozenset({*FEATURES, "arch-capabilities"}))
    assert absent_properties(make_pin(abi, mode="host-passthrough"), caps, known) == set()
