"""Host records from what hosts print: ``guestcpu capture`` documents and libvirt domcapabilities (pure).

A host record holds, per accelerator, one *profile*: the QEMU capabilities document
of that accelerator without what differs between two probes of the same thing (the
time of the probe, the host facts it was keyed on).  Identical profiles share one
row in the store, so ten thousand hosts of a few hardware and QEMU kinds keep a few
documents, and the answers are computed once per kind.

A domcapabilities file carries libvirt's own reading of QEMU: the host-model CPU and
every model's usability (with ``<blockers>`` since libvirt 9.x).  It is turned into
the same capabilities form, with model expansions taken from the catalog (libvirt's
cpu_map view): such a host takes part in every answer, but nothing is *verified
startable* on it, since QEMU's own expansions are not in the file.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.lifecycle.capture import capture_from_document
from guestcpu.qemu.caps import SCHEMA as CAPS_SCHEMA
from guestcpu.qemu.caps import SCHEMA_VERSION as CAPS_SCHEMA_VERSION
from guestcpu.qemu.caps import Expansion, MachineCaps, ModelCaps, QemuCaps, caps_from_document, to_document

#: the only architecture a fleet holds (the named-model answers are x86's)
FLEET_ARCH = "x86_64"
#: keys of a capabilities document that change with every probe, not with what QEMU offers
VOLATILE_KEYS = ("probed_at", "probe_seconds", "fingerprint")
#: domcapabilities do not say which QEMU version libvirt found (the capabilities schema allows it empty)
UNKNOWN_QEMU_VERSION = ""
SOURCE_CAPTURE = "capture"
SOURCE_DOMCAPS = "domcapabilities"


@dataclass(frozen=True)
class Profile:
    """What one QEMU under one accelerator offers, as stored (a document and its digest)."""

    accel: str
    digest: str
    document: Mapping[str, Any]
    qemu_version: str
    #: QEMU's own expansions are in it (a capture), so startability can be verified
    verified: bool

    def caps(self, source: str = "profile") -> QemuCaps:
        # checked against the JSON Schema when it was read (record_from_*); not again
        return caps_from_document(dict(self.document), source, check=False)


@dataclass(frozen=True)
class HostRecord:
    """One host as one input file describes it."""

    name: str
    source: str
    hostname: str
    kernel: str
    captured_at: str
    qemu_version: str
    profiles: Mapping[str, Profile]
    unavailable: Mapping[str, str] = field(default_factory=dict)
    #: vendor/brand/family/model/stepping as the capture read them
    cpu: Mapping[str, Any] = field(default_factory=dict)
    #: per accelerator: the host facts its probe was keyed on (kernel, microcode …)
    facts: Mapping[str, Any] = field(default_factory=dict)


def document_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces): identical documents (offers, pins) share one digest."""
    return "sha256:" + hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _profile(doc: Mapping[str, Any], source: str, *, verified: bool, known_digests: Mapping[str, Any]) -> Profile:
    stable = {k: v for k, v in doc.items() if k not in VOLATILE_KEYS}
    digest = document_digest(stable)
    if digest not in known_digests:
        caps_from_document(dict(doc), source)  # refuses a damaged document here, where it is read
    arch = stable.get("arch")
    if arch != FLEET_ARCH:
        raise InputError(f"{source} describes {arch!r}, not {FLEET_ARCH}: a fleet holds {FLEET_ARCH} hosts only")
    return Profile(str(stable.get("accel")), digest, stable, str(stable.get("qemu_version", "")), verified)


def record_from_capture(
    doc: Any, source: str, *, name: str | None = None, known_digests: Mapping[str, Any] | None = None
) -> HostRecord:
    """A host record from a ``guestcpu capture`` document (its schema and version are checked)."""
    if not isinstance(doc, dict):
        raise InputError(f"{source} is not a guestcpu host capture (a JSON object was expected)")
    accels = doc.get("accels")
    header = capture_from_document({**doc, "accels": {}}, source)  # schema, version and metadata checks
    if not isinstance(accels, dict) or not accels:
        raise InputError(f"{source} has no QEMU capabilities ('accels'); capture the host again")
    profiles = {}
    for accel, caps_doc in accels.items():
        if not isinstance(caps_doc, dict):
            raise InputError(f"{source} is damaged: its {accel} capabilities are not a JSON object")
        profiles[str(accel)] = _profile(caps_doc, f"{source} ({accel})", verified=True,
                                        known_digests=known_digests or {})
    facts = {accel: caps_doc.get("fingerprint", {}) for accel, caps_doc in accels.items()}
    host = name or header.hostname
    if not host:
        raise InputError(f"{source} names no host; give one with --name")
    return HostRecord(
        name=host, source=SOURCE_CAPTURE, hostname=header.hostname, kernel=header.kernel,
        captured_at=header.captured_at, qemu_version=header.qemu_version, profiles=profiles,
        unavailable=dict(header.unavailable), cpu=dict(header.cpu), facts=facts,
    )


# -- libvirt domcapabilities ------------------------------------------------------------
def _qemu_props(bits: int, catalog: Catalog) -> dict[str, Any]:
    return {catalog.features[i].qemu_name: True for i in range(len(catalog.features)) if bits >> i & 1}


def _feature_bits(names: list[str], catalog: Catalog, source: str) -> int:
    bits = 0
    for name in names:
        if not catalog.has_feature(name):
            raise InputError(f"{source}: unknown CPU feature '{name}' in the domain capabilities")
        bits |= 1 << catalog.feature(name).index
    return bits


def record_from_domcapabilities(data: bytes, source: str, catalog: Catalog, *, name: str | None = None) -> HostRecord:
    """A host record from ``virsh domcapabilities`` XML (its arch and accelerator are checked)."""
    from guestcpu.formats.xmlsafe import parse_xml_bytes

    root = parse_xml_bytes(data.strip(), source)
    if root.tag != "domainCapabilities":
        raise InputError(f"{source} is <{root.tag}>, not libvirt domain capabilities ('virsh domcapabilities')")
    arch = (root.findtext("arch") or "").strip()
    if arch != FLEET_ARCH:
        raise InputError(
            f"{source} is the domain capabilities of {arch or 'no'} architecture; a fleet holds {FLEET_ARCH} hosts "
            f"(run 'virsh domcapabilities --arch {FLEET_ARCH}')"
        )
    domain = (root.findtext("domain") or "").strip()
    accel = {"kvm": "kvm", "qemu": "tcg"}.get(domain)
    if accel is None:
        raise InputError(f"{source}: virtualization type {domain!r} is not kvm or qemu (TCG)")
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") == "no":
        raise InputError(f"{source}: the domain capabilities have no supported host-model CPU")
    base = (mode.findtext("model") or "").strip()
    if not catalog.has_model(base):
        raise InputError(f"{source}: unknown host-model CPU model '{base}'")
    required = [f.get("name", "") for f in mode.findall("feature") if f.get("policy") != "disable"]
    disabled = [f.get("name", "") for f in mode.findall("feature") if f.get("policy") == "disable"]
    host_bits = (catalog.model(base).features | _feature_bits(required, catalog, source)) & ~_feature_bits(
        disabled, catalog, source)
    vendor_name = (mode.findtext("vendor") or "").strip()
    host_props = _qemu_props(host_bits, catalog)
    if vendor_name:
        with contextlib.suppress(InputError):
            host_props["vendor"] = catalog.vendor(vendor_name).string
    blockers: dict[str, tuple[str, ...]] = {}
    for node in root.findall("cpu/mode[@name='custom']/blockers"):
        found: list[str] = []
        for feature in node.findall("feature"):
            fname = feature.get("name", "")
            found.append(catalog.feature(fname).qemu_name if catalog.has_feature(fname) else fname)
        blockers[node.get("model", "")] = tuple(found)
    models = []
    for node in root.findall("cpu/mode[@name='custom']/model"):
        model_name = (node.text or "").strip()
        usable = node.get("usable") == "yes"
        expansion = None
        if catalog.has_model(model_name):
            expansion = Expansion(model_name, _qemu_props(catalog.model(model_name).features, catalog))
        blocked = blockers.get(model_name, ())
        if not usable and not blocked and expansion is not None:
            # Older libvirt says only usable='no': what the model has beyond the host-model blocks it.
            blocked = tuple(k for k in expansion.enabled if k not in host_props)
        models.append(ModelCaps(model_name, usable, () if usable else blocked, expansion=expansion))
    machine = (root.findtext("machine") or "").strip()
    caps = QemuCaps(
        arch=arch, accel=accel, binary=(root.findtext("path") or "").strip(), qemu_version=UNKNOWN_QEMU_VERSION,
        package="libvirt domcapabilities (QEMU version not given)",
        machines=(MachineCaps(machine, is_default=True),) if machine else (),
        models=tuple(models), host_static=Expansion("host" if accel == "kvm" else "max", host_props),
        host_full=None, known_props=frozenset(f.qemu_name for f in catalog.features),
    )
    stable = {k: v for k, v in to_document(caps).items() if k not in VOLATILE_KEYS}
    assert stable["schema"] == CAPS_SCHEMA and stable["schema_version"] == CAPS_SCHEMA_VERSION
    profile = Profile(accel, document_digest(stable), stable, "", verified=False)
    host = name or ""
    if not host:
        raise InputError(f"{source}: domain capabilities do not name their host; give one with --name")
    return HostRecord(
        name=host, source=SOURCE_DOMCAPS, hostname=host, kernel="", captured_at="", qemu_version="",
        profiles={accel: profile}, cpu={"vendor": vendor_name, "host_model": base},
    )


def record_from_bytes(
    data: bytes, source: str, catalog: Catalog, *, name: str | None = None,
    known_digests: Mapping[str, Any] | None = None,
) -> HostRecord:
    """A capture (JSON) or a domcapabilities (XML) file, told apart by its first character."""
    text = data.lstrip()
    if text.startswith(b"<"):
        return record_from_domcapabilities(data, source, catalog, name=name)
    try:
        doc = orjson.loads(data)  # a fleet add parses thousands of large documents: the fast parser
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"{source} is neither a guestcpu capture (JSON) nor libvirt domain capabilities (XML): {exc}"
        ) from None
    return record_from_capture(doc, source, name=name, known_digests=known_digests)
