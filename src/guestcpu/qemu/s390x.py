"""s390x: CPU models, comparison and baseline come from QEMU itself.

QEMU answers ``query-cpu-model-comparison`` (identical / superset / subset /
incompatible plus the responsible properties) and ``query-cpu-model-baseline`` (a
static ``<model>-base`` plus properties) on s390x; guestcpu passes the question on
and reports QEMU's answer unchanged.  Model names and usability are probed and
cached like x86 (``cache.load_caps(arch='s390x')``).

A CPU is written ``z14``, ``z14,vx=off,msa8=on``, ``z14,-vx,+msa8`` or given as a
libvirt ``<cpu>`` file (model + features with policies).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.qmp_replies import parse_baseline, parse_comparison, parse_expansion
from guestcpu.qemu.process import DEFAULT_TIMEOUT, QemuProcess, base_args, resolve_binary, run_sync

ARCH = "s390x"
RESULTS = ("identical", "superset", "subset", "incompatible")
#: QEMU's comparison of a host (model A) with a guest (model B) -> can the host run the guest?
#: A host that is a subset of the guest lacks something it has: incompatible, as libvirt maps it.
HOST_VERDICTS = {"identical": "identical", "superset": "superset", "subset": "incompatible",
                 "incompatible": "incompatible"}
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    props: Mapping[str, bool] = field(default_factory=dict)

    def to_qmp(self) -> dict[str, Any]:
        model: dict[str, Any] = {"name": self.name}
        if self.props:
            model["props"] = dict(self.props)
        return model

    @property
    def spec(self) -> str:
        return ",".join([self.name, *(f"{k}={'on' if v else 'off'}" for k, v in self.props.items())])


def parse_model_spec(text: str) -> ModelSpec:
    """``z14,vx=off,+msa8`` or a libvirt ``<cpu>`` XML file -> ModelSpec."""
    if text.endswith(".xml") or (os.sep in text and Path(text).is_file()):
        return _spec_from_xml(text)
    parts = [p.strip() for p in text.split(",")]
    if not parts[0]:
        raise InputError(f"'{text}' has no model name; expected e.g. 'z14' or 'z14,vx=off'")
    props: dict[str, bool] = {}
    for part in parts[1:]:
        if not part:
            continue
        if part[0] in "+-":
            props[part[1:]] = part[0] == "+"
            continue
        key, sep, value = part.partition("=")
        if not sep or value.lower() not in _TRUE | _FALSE:
            raise InputError(
                f"'{part}' in '{text}' is not a feature setting; expected name=on, name=off, +name or -name"
            )
        props[key] = value.lower() in _TRUE
    return ModelSpec(parts[0], props)


def _spec_from_xml(path: str) -> ModelSpec:
    from guestcpu.formats.files import read_bytes
    from guestcpu.formats.libvirt_xml import parse_cpu
    from guestcpu.model.cpu import Policy

    cpu = parse_cpu(read_bytes(path, "an s390x <cpu> XML"), path)
    if not cpu.model:
        raise InputError(f"{path}: the <cpu> has no <model>; s390x needs a model name such as 'z14'")
    props = {}
    for feature in cpu.features:
        policy = feature.policy or Policy.REQUIRE
        if policy is Policy.OPTIONAL:
            continue
        props[feature.name] = policy in (Policy.REQUIRE, Policy.FORCE)
    return ModelSpec(cpu.model, props)


@dataclass(frozen=True)
class S390Comparison:
    result: str
    responsible_properties: tuple[str, ...]
    modela: ModelSpec
    modelb: ModelSpec

    @property
    def host_verdict(self) -> str:
        """Read with model A as the host and B as the guest: identical, superset or incompatible."""
        return HOST_VERDICTS[self.result]

    def as_dict(self) -> dict[str, object]:
        return {
            "result": self.result,
            "responsible_properties": list(self.responsible_properties),
            "cpu": self.modela.spec,
            "other": self.modelb.spec,
        }


@dataclass(frozen=True)
class S390Baseline:
    name: str
    props: Mapping[str, Any]
    inputs: tuple[ModelSpec, ...]

    @property
    def spec(self) -> str:
        return ModelSpec(self.name, {k: bool(v) for k, v in self.props.items() if isinstance(v, bool)}).spec

    def as_dict(self) -> dict[str, object]:
        return {"model": self.name, "props": dict(self.props), "spec": self.spec,
                "inputs": [m.spec for m in self.inputs]}


def comparison_from_reply(reply: Any, a: ModelSpec, b: ModelSpec) -> S390Comparison:
    found = parse_comparison(reply)
    return S390Comparison(found.result, found.responsible_properties, a, b)


def baseline_from_reply(
    reply: Any, inputs: Sequence[ModelSpec], command: str = "query-cpu-model-baseline"
) -> S390Baseline:
    model = parse_expansion(reply, command)
    return S390Baseline(model.name, dict(model.props), tuple(inputs))


def _offer_name(accel: str) -> str:
    return "host" if accel == "kvm" else "max"


async def _compare(binary: str, a: ModelSpec, b: ModelSpec, accel: str, timeout: float) -> S390Comparison:
    async with QemuProcess(binary, base_args("none", accel), timeout=timeout, name="s390x") as qemu:
        reply = await qemu.execute("query-cpu-model-comparison", {"modela": a.to_qmp(), "modelb": b.to_qmp()})
    return comparison_from_reply(reply, a, b)


async def _baseline(binary: str, models: Sequence[ModelSpec], accel: str, timeout: float) -> S390Baseline:
    async with QemuProcess(binary, base_args("none", accel), timeout=timeout, name="s390x") as qemu:
        if len(models) == 1:
            reply = await qemu.execute("query-cpu-model-expansion", {"type": "static", "model": models[0].to_qmp()})
            return baseline_from_reply(reply, models, "query-cpu-model-expansion")
        current = models[0].to_qmp()
        for other in models[1:]:
            reply = await qemu.execute("query-cpu-model-baseline", {"modela": current, "modelb": other.to_qmp()})
            current = parse_baseline(reply).to_qmp()
    return baseline_from_reply(reply, models)


def compare_models(
    a: ModelSpec, b: ModelSpec | None = None, *, binary: str | None = None, accel: str = "tcg",
    timeout: float = DEFAULT_TIMEOUT,
) -> S390Comparison:
    """QEMU's comparison of ``a`` with ``b`` (default: what QEMU offers, ``max``/``host``)."""
    other = b or ModelSpec(_offer_name(accel))
    return run_sync(_compare(resolve_binary(binary, ARCH), a, other, accel, timeout))  # type: ignore[no-any-return]


def host_runs_guest(
    guest: ModelSpec, host: ModelSpec | None = None, *, binary: str | None = None, accel: str = "tcg",
    timeout: float = DEFAULT_TIMEOUT,
) -> S390Comparison:
    """Can ``host`` (default: what QEMU offers) run ``guest``?  QEMU compares the host (A) with the guest (B).

    Read the answer with ``host_verdict``: a z13 host is a *subset* of a z14 guest,
    so it cannot run it (incompatible), as libvirt's hypervisor-cpu-compare says.
    """
    offer = host or ModelSpec(_offer_name(accel))
    return run_sync(_compare(resolve_binary(binary, ARCH), offer, guest, accel, timeout))  # type: ignore[no-any-return]


def baseline_models(
    models: Sequence[ModelSpec], *, binary: str | None = None, accel: str = "tcg", timeout: float = DEFAULT_TIMEOUT
) -> S390Baseline:
    """QEMU's baseline of every model (pairwise, left to right); one model gives its static expansion."""
    if not models:
        raise InputError("s390x baseline needs at least one CPU model")
    return run_sync(_baseline(resolve_binary(binary, ARCH), models, accel, timeout))  # type: ignore[no-any-return]
