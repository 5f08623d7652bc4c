"""libvirt's ``<cpu>`` and ``<cpudata>`` XML, read and written as libvirt does.

Readers accept a bare ``<cpu>``, a capabilities document (``/capabilities/host/cpu``),
a domain capabilities document (the host-model ``<mode>``), a domain XML
(``/domain/cpu``), or a list of ``<cpu>`` elements (``virsh cpu-baseline`` input).
Writers produce the same element layout and attribute order as libvirt, so output can
be diffed against libvirt's.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from guestcpu.errors import InputError
from guestcpu.formats.xmlsafe import parse_xml_bytes
from guestcpu.model.cpu import (
    Check,
    CpuDefinition,
    CpuType,
    Fallback,
    FeatureRequest,
    Match,
    Mode,
    Policy,
    Topology,
)
from guestcpu.model.cpuid import CpuidData

_KNOWN_CHILDREN = {"arch", "model", "vendor", "microcode", "signature", "topology", "feature"}
_POLICIES = {p.value: p for p in Policy}
_FEATURE_REQUESTS: dict[tuple[str, str | None], FeatureRequest] = {}


def feature_request(name: str, policy: Policy | None) -> FeatureRequest:
    """Shared, immutable ``FeatureRequest`` instances: parsing many CPUs makes the same few hundred."""
    key = (name, policy.value if policy is not None else None)
    found = _FEATURE_REQUESTS.get(key)
    if found is None:
        found = FeatureRequest(name, policy)
        if len(_FEATURE_REQUESTS) < 50_000:
            _FEATURE_REQUESTS[key] = found
    return found


def _enum(cls: Any, value: str | None, what: str, source: str) -> Any:
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(m.value for m in cls)
        raise InputError(f"{source}: invalid {what} '{value}'; expected one of {valid}") from None


def _int_attr(node: Any, name: str, source: str) -> int | None:
    value = node.get(name)
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise InputError(f"{source}: <{node.tag} {name}='{value}'> is not a number") from None


def cpu_from_element(node: Any, source: str, force_type: CpuType | None = None) -> CpuDefinition:
    """Parse one ``<cpu>`` element (libvirt's virCPUDefParseXML, type AUTO unless forced)."""
    if node.tag != "cpu":
        raise InputError(f"{source}: expected a <cpu> element, found <{node.tag}>")
    # One pass over the children (files with thousands of CPUs are common input).
    first: dict[str, Any] = {}
    feature_nodes: list[Any] = []
    extra_nodes: list[Any] = []
    for child in node:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag == "feature":
            feature_nodes.append(child)
        elif tag in _KNOWN_CHILDREN:
            first.setdefault(tag, child)
        else:
            extra_nodes.append(child)
    has_arch = "arch" in first
    if force_type is not None:
        cpu_type = force_type
    elif has_arch:
        if node.get("match") is not None:
            raise InputError(f"{source}: <arch> cannot be used in a <cpu> that has a 'match' attribute")
        cpu_type = CpuType.HOST
    else:
        cpu_type = CpuType.GUEST

    mode = _enum(Mode, node.get("mode"), "CPU mode", source)
    match = _enum(Match, node.get("match"), "CPU match", source)
    check = _enum(Check, node.get("check"), "CPU check", source)

    model_node = first.get("model")
    model = fallback = vendor_id = None
    if model_node is not None:
        model = (model_node.text or "").strip() or None
        fallback = _enum(Fallback, model_node.get("fallback"), "model fallback", source)
        vendor_id = model_node.get("vendor_id")
        if vendor_id is not None and (len(vendor_id) != 12 or "," in vendor_id):
            raise InputError(f"{source}: vendor_id '{vendor_id}' must be exactly 12 characters without commas")

    vendor_node = first.get("vendor")
    vendor = (vendor_node.text or "").strip() if vendor_node is not None else None
    if vendor is not None and not vendor:
        raise InputError(f"{source}: <vendor> is empty; expected a vendor name such as Intel or AMD")
    if vendor and not model and cpu_type is CpuType.GUEST and mode in (None, Mode.CUSTOM):
        raise InputError(f"{source}: a CPU <vendor> needs a <model>")

    arch_node = first.get("arch")
    micro_node = first.get("microcode")
    signature = _signature(first.get("signature"), source)
    topology = _topology(first.get("topology"), source)
    features = _features(feature_nodes, cpu_type, source)

    if cpu_type is CpuType.GUEST:
        # libvirt's defaults, made explicit as libvirt itself writes them back.
        mode = mode or Mode.CUSTOM
        if mode is Mode.CUSTOM and model is not None:
            match = match or Match.EXACT
            fallback = fallback or Fallback.ALLOW

    extra = tuple(etree.tostring(child, encoding="unicode").strip() for child in extra_nodes)
    return CpuDefinition(
        type=cpu_type,
        mode=mode,
        match=match,
        check=check,
        migratable=node.get("migratable"),
        arch=(arch_node.text or "").strip() if arch_node is not None else None,
        model=model,
        fallback=fallback,
        vendor_id=vendor_id,
        vendor=vendor,
        microcode=micro_node.get("version") if micro_node is not None else None,
        signature=signature,
        topology=topology,
        features=tuple(features),
        extra_xml=extra,
    )


def _signature(node: Any, source: str) -> tuple[int, int, int] | None:
    if node is None:
        return None
    fam = _int_attr(node, "family", source)
    mod = _int_attr(node, "model", source)
    step = _int_attr(node, "stepping", source)
    return (fam or 0, mod or 0, step or 0)


#: No QEMU machine type takes more vCPUs than this (q35 in QEMU 10.0: 4096); the machine's own limit is
#: checked where the machine type is known (``define``).
MAX_VCPUS = 4096


def _topology(node: Any, source: str) -> Topology | None:
    if node is None:
        return None
    values: dict[str, int | None] = {}
    for name in ("sockets", "dies", "clusters", "cores", "threads"):
        value = _int_attr(node, name, source)
        if value is not None and not 1 <= value <= MAX_VCPUS:
            raise InputError(f"{source}: <topology {name}='{node.get(name)}'> must be between 1 and {MAX_VCPUS}")
        values[name] = value
    topology = Topology(
        sockets=values["sockets"] or 1,
        cores=values["cores"] or 1,
        threads=values["threads"] or 1,
        dies=values["dies"],
        clusters=values["clusters"],
    )
    total = topology.sockets * (topology.dies or 1) * (topology.clusters or 1) * topology.cores * topology.threads
    if total > MAX_VCPUS:
        raise InputError(f"{source}: the <topology> gives {total} vCPUs; no QEMU machine type takes more than "
                         f"{MAX_VCPUS}")
    return topology


def _features(nodes: list[Any], cpu_type: CpuType, source: str) -> list[FeatureRequest]:
    """``<feature>`` elements; host CPUs carry no policy, guest ones default to require."""
    features: list[FeatureRequest] = []
    seen: set[str] = set()
    for feat in nodes:
        name = feat.get("name")
        if not name:
            raise InputError(f"{source}: a <feature> has no name attribute")
        if name in seen:
            raise InputError(f"{source}: feature '{name}' is listed more than once")
        seen.add(name)
        policy_text = feat.get("policy")
        if cpu_type is CpuType.HOST:
            policy = None
        elif policy_text is None:
            policy = Policy.REQUIRE
        else:
            policy = _POLICIES.get(policy_text) or _enum(Policy, policy_text, "feature policy", source)
        features.append(feature_request(name, policy))
    return features


def _find_cpus(root: Any) -> list[Any]:
    """The ``<cpu>`` elements a document holds, wherever libvirt puts them."""
    tag = root.tag
    if tag == "cpu":
        return [root]
    if tag == "capabilities":
        cpu = root.find("host/cpu")
        return [cpu] if cpu is not None else []
    if tag == "domain":
        cpu = root.find("cpu")
        return [cpu] if cpu is not None else []
    if tag == "domainCapabilities":
        return [root]  # handled by the domcapabilities reader
    return [c for c in root if isinstance(c.tag, str) and c.tag == "cpu"]


def _domcaps_host_model(root: Any, source: str) -> CpuDefinition:
    mode = root.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") == "no":
        raise InputError(f"{source}: the domain capabilities have no supported host-model CPU")
    node = etree.Element("cpu", mode="custom", match="exact")
    for child in mode:
        if isinstance(child.tag, str) and child.tag in ("model", "vendor", "feature"):
            node.append(child.__copy__())
    return cpu_from_element(node, source, CpuType.GUEST)


def parse_cpus(data: bytes, source: str) -> list[CpuDefinition]:
    """Every CPU in a document (one or more ``<cpu>``, capabilities, domcaps or domain)."""
    stripped = data.strip()
    body = _strip_prolog(stripped)
    if body.startswith(b"<cpu") and not body.startswith(b"<cpuTest") and body.count(b"<cpu") > 1:
        # virsh cpu-baseline accepts <cpu> elements written one after another.
        stripped = b"<cpus>" + body + b"</cpus>"
    root = parse_xml_bytes(stripped, source)
    if root.tag == "domainCapabilities":
        return [_domcaps_host_model(root, source)]
    nodes = _find_cpus(root)
    if not nodes:
        raise InputError(
            f"{source}: no <cpu> element found in <{root.tag}>; expected a <cpu>, a capabilities, "
            "domain capabilities or domain document"
        )
    return [cpu_from_element(n, source) for n in nodes]


def _strip_prolog(data: bytes) -> bytes:
    """``data`` without a leading XML declaration and comments."""
    while True:
        if data.startswith(b"<?") and b"?>" in data:
            data = data[data.index(b"?>") + 2 :].lstrip()
        elif data.startswith(b"<!--") and b"-->" in data:
            data = data[data.index(b"-->") + 3 :].lstrip()
        else:
            return data


def parse_cpu(data: bytes, source: str) -> CpuDefinition:
    cpus = parse_cpus(data, source)
    if len(cpus) != 1:
        raise InputError(f"{source}: expected one <cpu>, found {len(cpus)}")
    return cpus[0]


# -- writing -------------------------------------------------------------------------


#: Where libvirt writes child elements guestcpu keeps verbatim, relative to the ones it models.
_BEFORE_TOPOLOGY = {"counter"}
_AFTER_FEATURES = {"pages", "numa"}


def _extra_tag(extra: str) -> str:
    return extra[1:].split(None, 1)[0].rstrip("/>")


def cpu_to_element(cpu: CpuDefinition) -> Any:
    """libvirt's element order (virCPUDefFormatBuf): arch, model, vendor, microcode,
    signature, counter, topology, cache/maxphysaddr, features, then numa/pages."""
    node = etree.Element("cpu")
    if cpu.type is CpuType.GUEST:
        if cpu.mode is not None:
            node.set("mode", cpu.mode.value)
        if cpu.match is not None and cpu.mode in (None, Mode.CUSTOM):
            node.set("match", cpu.match.value)
        if cpu.check is not None:
            node.set("check", cpu.check.value)
        if cpu.migratable is not None:
            node.set("migratable", cpu.migratable)
    if cpu.arch is not None:
        etree.SubElement(node, "arch").text = cpu.arch
    if cpu.model is not None or (cpu.type is CpuType.GUEST and cpu.fallback is not None):
        model = etree.SubElement(node, "model")
        if cpu.fallback is not None and cpu.type is CpuType.GUEST:
            model.set("fallback", cpu.fallback.value)
        if cpu.vendor_id is not None:
            model.set("vendor_id", cpu.vendor_id)
        if cpu.model is not None:
            model.text = cpu.model
    if cpu.vendor is not None:
        etree.SubElement(node, "vendor").text = cpu.vendor
    if cpu.microcode is not None:
        etree.SubElement(node, "microcode", version=cpu.microcode)
    if cpu.signature is not None:
        fam, mod, step = cpu.signature
        etree.SubElement(node, "signature", family=str(fam), model=str(mod), stepping=str(step))
    extras = [(e, _extra_tag(e)) for e in cpu.extra_xml]
    for extra, tag in extras:
        if tag in _BEFORE_TOPOLOGY:
            node.append(etree.fromstring(extra))
    if cpu.topology is not None:
        topo = etree.SubElement(node, "topology", sockets=str(cpu.topology.sockets))
        if cpu.topology.dies is not None:
            topo.set("dies", str(cpu.topology.dies))
        if cpu.topology.clusters is not None:
            topo.set("clusters", str(cpu.topology.clusters))
        topo.set("cores", str(cpu.topology.cores))
        topo.set("threads", str(cpu.topology.threads))
    for extra, tag in extras:
        if tag not in _BEFORE_TOPOLOGY and tag not in _AFTER_FEATURES:
            node.append(etree.fromstring(extra))
    for feature in cpu.features:
        feat = etree.SubElement(node, "feature")
        if cpu.type is CpuType.GUEST and feature.policy is not None:
            feat.set("policy", feature.policy.value)
        feat.set("name", feature.name)
    for extra, tag in extras:
        if tag in _AFTER_FEATURES:
            node.append(etree.fromstring(extra))
    return node


def format_cpu(cpu: CpuDefinition) -> str:
    """The ``<cpu>`` as libvirt formats it: two-space indent, single-quoted attributes."""
    node = cpu_to_element(cpu)
    etree.indent(node, space="  ")
    text = etree.tostring(node, encoding="unicode")
    return _single_quote_attributes(text) + "\n"


def _single_quote_attributes(text: str) -> str:
    # lxml always writes double quotes; libvirt writes single quotes.  Attribute values
    # here never contain quotes (names, numbers, enums), so a plain swap inside tags is safe.
    out: list[str] = []
    in_tag = False
    for ch in text:
        if ch == "<":
            in_tag = True
        elif ch == ">":
            in_tag = False
        out.append("'" if in_tag and ch == '"' else ch)
    return "".join(out)


# -- <cpudata> -----------------------------------------------------------------------


def parse_cpudata(data: bytes, source: str) -> CpuidData:
    """A libvirt ``<cpudata arch='x86'>`` dump of ``<cpuid>`` and ``<msr>`` values."""
    root = parse_xml_bytes(data, source)
    if root.tag != "cpudata":
        raise InputError(f"{source}: expected <cpudata arch='x86'>, found <{root.tag}>")
    arch = root.get("arch")
    if arch != "x86":
        raise InputError(f"{source}: CPUID data for arch '{arch}' is not supported; expected arch='x86'")
    leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    msrs: dict[int, int] = {}
    for node in root:
        if not isinstance(node.tag, str):
            continue
        if node.tag == "cpuid":
            leaf = _int_attr(node, "eax_in", source)
            if leaf is None:
                raise InputError(f"{source}: a <cpuid> element has no eax_in attribute")
            sub = _int_attr(node, "ecx_in", source) or 0
            regs = tuple(_int_attr(node, r, source) or 0 for r in ("eax", "ebx", "ecx", "edx"))
            leaves[(leaf, sub)] = regs  # type: ignore[assignment]
        elif node.tag == "msr":
            index = _int_attr(node, "index", source)
            if index is None:
                raise InputError(f"{source}: an <msr> element has no index attribute")
            msrs[index] = ((_int_attr(node, "edx", source) or 0) << 32) | (_int_attr(node, "eax", source) or 0)
        else:
            raise InputError(f"{source}: unexpected <{node.tag}> in <cpudata>; expected <cpuid> or <msr>")
    brand = None
    first = root.getprevious()
    if first is not None and not isinstance(first.tag, str):
        brand = (first.text or "").strip() or None
    return CpuidData(leaves, msrs, brand)


def format_cpudata(data: CpuidData) -> str:
    lines = ["<cpudata arch='x86'>"]
    for (leaf, sub), (eax, ebx, ecx, edx) in sorted(data.leaves.items()):
        lines.append(
            f"  <cpuid eax_in='0x{leaf:08x}' ecx_in='0x{sub:02x}' eax='0x{eax:08x}' "
            f"ebx='0x{ebx:08x}' ecx='0x{ecx:08x}' edx='0x{edx:08x}'/>"
        )
    for index, value in sorted(data.msrs.items()):
        lines.append(f"  <msr index='0x{index:x}' edx='0x{value >> 32:08x}' eax='0x{value & 0xFFFFFFFF:08x}'/>")
    lines.append("</cpudata>")
    return "\n".join(lines) + "\n"
