"""Read a guest definition: a libvirt domain XML or a bare ``<cpu>``.

Besides the ``<cpu>`` (which may be absent: the machine type's default CPU is then
used), a domain says which machine type, architecture and accelerator the guest has,
and those decide the pinned CPU as much as the model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.libvirt_xml import MAX_VCPUS, cpu_from_element
from guestcpu.formats.xmlsafe import parse_xml_bytes
from guestcpu.model.cpu import CpuDefinition, CpuType, Topology

#: libvirt's domain types and the QEMU accelerator each one means.
ACCEL_OF_DOMAIN_TYPE = {"kvm": "kvm", "qemu": "tcg"}


@dataclass(frozen=True)
class GuestDefinition:
    cpu: CpuDefinition | None
    machine: str | None = None
    arch: str | None = None
    accel: str | None = None
    name: str | None = None
    #: the domain's <uuid> (lower-case, canonical form)
    uuid: str | None = None
    #: the guest's CPU topology (from <cpu><topology>, else <vcpu> sockets; None: one vCPU)
    topology: Topology | None = None


def parse_guest(data: bytes, source: str) -> GuestDefinition:
    """The guest's CPU, machine type, arch and accelerator from domain XML or a ``<cpu>``."""
    root = parse_xml_bytes(data, source)
    if root.tag == "cpu":
        bare = cpu_from_element(root, source, CpuType.GUEST)
        return GuestDefinition(cpu=bare, topology=bare.topology)
    if root.tag != "domain":
        raise InputError(f"{source}: expected a libvirt <domain> or a guest <cpu>, found <{root.tag}>")
    domain_type = root.get("type")
    accel = ACCEL_OF_DOMAIN_TYPE.get(domain_type or "")
    if domain_type is not None and accel is None:
        raise InputError(
            f"{source}: domain type '{domain_type}' is not a QEMU guest; expected type='kvm' or type='qemu'"
        )
    os_type = root.find("os/type")
    machine = arch = None
    if os_type is not None:
        machine = (os_type.get("machine") or "").strip() or None
        arch = (os_type.get("arch") or "").strip() or None
    if arch is not None and arch != "x86_64":
        raise InputError(f"{source}: guest arch '{arch}' is not supported by the lifecycle commands; expected x86_64")
    node = root.find("cpu")
    cpu = cpu_from_element(node, source, CpuType.GUEST) if node is not None else None
    topology = _topology(root, cpu, source)
    if cpu is not None and cpu.model is None and (cpu.mode is None or cpu.mode.value == "custom"):
        if cpu.features:
            raise InputError(f"{source}: the <cpu> lists features but no <model>; name a model such as 'qemu64'")
        # A <cpu> with only topology or NUMA: no model was chosen, so the default CPU applies.
        cpu = None
    name_node = root.find("name")
    name = (name_node.text or "").strip() if name_node is not None else None
    return GuestDefinition(cpu=cpu, machine=machine, arch=arch, accel=accel, name=name or None,
                           uuid=_uuid(root, source), topology=topology)


def _uuid(root: Any, source: str) -> str | None:
    import uuid

    node = root.find("uuid")
    text = (node.text or "").strip() if node is not None else ""
    if not text:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InputError(f"{source}: <uuid>{text[:40]}</uuid> is not a UUID; expected e.g. "
                         "'c7a5fdbd-cdaf-9455-926a-d65c16db1809'") from None


def _topology(root: Any, cpu: CpuDefinition | None, source: str) -> Topology | None:
    """As libvirt lays vCPUs out: the <topology>, else one socket per vCPU."""
    vcpu_node = root.find("vcpu")
    vcpus = None
    if vcpu_node is not None:
        try:
            vcpus = int((vcpu_node.text or "").strip())
        except ValueError:
            raise InputError(f"{source}: <vcpu>{vcpu_node.text}</vcpu> is not a number of vCPUs") from None
        if not 1 <= vcpus <= MAX_VCPUS:
            raise InputError(f"{source}: <vcpu> must be between 1 and {MAX_VCPUS}")
    topology = cpu.topology if cpu is not None else None
    if topology is not None:
        total = topology.sockets * (topology.dies or 1) * (topology.clusters or 1) * topology.cores * topology.threads
        if vcpus is not None and vcpus != total:
            raise InputError(f"{source}: <vcpu> is {vcpus} but the <topology> gives {total} vCPUs")
        return topology
    return Topology(sockets=vcpus, cores=1, threads=1) if vcpus else None
