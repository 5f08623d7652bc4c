"""Turn the files users pass on the command line into CPU definitions.

A host CPU can come as a libvirt ``<cpu>``, a capabilities or domain capabilities
document, a libvirt ``<cpudata>`` CPUID dump or raw ``cpuid -r`` output; CPUID dumps
are decoded to a host CPU (model + features) first.  A guest CPU comes as a ``<cpu>``
or a domain XML.
"""

from __future__ import annotations

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.decode import DecodeResult, decode, facts_from_cpuid
from guestcpu.errors import InputError
from guestcpu.model.cpu import CpuDefinition, CpuType
from guestcpu.model.cpuid import CpuidData


def _first_tag(data: bytes) -> bytes:
    """The name of the first element, skipping declarations and comments."""
    text = data.lstrip()
    while text.startswith(b"<?") or text.startswith(b"<!--"):
        end = text.find(b"?>") + 2 if text.startswith(b"<?") else text.find(b"-->") + 3
        if end < 3:
            return b""
        text = text[end:].lstrip()
    if not text.startswith(b"<"):
        return b""
    name = text[1:].split(None, 1)[0] if text[1:] else b""
    return name.rstrip(b">/")


def cpuid_from_bytes(data: bytes, source: str) -> CpuidData | None:
    """CPUID data if ``data`` is a CPUID dump (libvirt <cpudata> or ``cpuid -r``), else None."""
    if not data.strip():
        raise InputError(f"{source} is empty; expected a CPU description (XML) or a CPUID dump")
    tag = _first_tag(data)
    if tag == b"cpudata":
        from guestcpu.formats.libvirt_xml import parse_cpudata

        return parse_cpudata(data, source)
    if tag:
        return None
    if data.lstrip().startswith(b"{"):
        return _cpuid_from_capture(data, source)
    from guestcpu.formats.cpuid_raw import looks_like_cpuid_raw, parse_cpuid_raw

    if looks_like_cpuid_raw(data):
        return parse_cpuid_raw(data.decode("utf-8", errors="replace"), source)
    raise InputError(
        f"{source} is neither XML nor raw 'cpuid -r' output; expected a libvirt <cpu>, capabilities, "
        "<cpudata> or domain XML document, or the output of 'cpuid -r'"
    )


def _cpuid_from_capture(data: bytes, source: str) -> CpuidData:
    """The host CPUID recorded in a ``guestcpu capture`` document."""
    from guestcpu.formats.files import loads_json
    from guestcpu.formats.libvirt_xml import parse_cpudata

    doc = loads_json(data, source, "a 'guestcpu capture' document")
    if not isinstance(doc, dict) or doc.get("schema") != "guestcpu/host-capture":
        raise InputError(
            f"{source} is JSON but not a 'guestcpu capture' document; expected schema 'guestcpu/host-capture', "
            "an XML CPU description or a CPUID dump"
        )
    cpuid = doc.get("cpuid")
    if not isinstance(cpuid, str) or not cpuid.strip():
        reason = doc.get("cpuid_error") or "it holds no CPUID"
        raise InputError(f"{source}: the capture has no host CPUID ({reason}); capture the host again")
    return parse_cpudata(cpuid.encode(), f"{source} (cpuid)")


def decode_cpuid(data: CpuidData, catalog: Catalog, flavor: CpuType, source: str) -> DecodeResult:
    facts = facts_from_cpuid(data, catalog)
    if not data.leaves:
        raise InputError(f"{source} holds no CPUID leaves")
    if facts.vendor is None and data.vendor_string:
        known = ", ".join(f"{v.string} ({v.name})" for v in catalog.vendors)
        raise InputError(f"{source}: CPU vendor '{data.vendor_string}' is not in the catalog; known: {known}")
    return decode(facts, catalog, flavor, explain=True)


def host_cpus_from_bytes(data: bytes, source: str, catalog: Catalog) -> list[CpuDefinition]:
    """Host CPUs described by a file: XML documents as they are, CPUID dumps decoded."""
    cpuid = cpuid_from_bytes(data, source)
    if cpuid is not None:
        return [decode_cpuid(cpuid, catalog, CpuType.HOST, source).cpu]
    from guestcpu.formats.libvirt_xml import parse_cpus

    cpus = parse_cpus(data, source)
    for cpu in cpus:
        if cpu.arch is not None and cpu.arch not in ("x86_64", "i686"):
            raise InputError(f"{source}: CPU arch '{cpu.arch}' is not supported here; expected x86_64 or i686")
    return cpus


def domain_accel(data: bytes, source: str) -> str | None:
    """The accelerator a domain XML asks for (``type='qemu'``: TCG); None for a bare ``<cpu>``."""
    if _first_tag(data) != b"domain":
        return None
    from guestcpu.formats.xmlsafe import parse_xml_bytes
    from guestcpu.lifecycle.definition import ACCEL_OF_DOMAIN_TYPE

    return ACCEL_OF_DOMAIN_TYPE.get(parse_xml_bytes(data, source).get("type") or "")


def guest_cpu_from_bytes(data: bytes, source: str) -> CpuDefinition:
    from guestcpu.formats.libvirt_xml import parse_cpus

    if cpuid_from_bytes(data, source) is not None:
        raise InputError(f"{source} is a CPUID dump; expected a guest <cpu> or a domain XML")
    cpus = parse_cpus(data, source)
    if len(cpus) != 1:
        raise InputError(f"{source}: expected one guest <cpu>, found {len(cpus)}")
    return cpus[0]
