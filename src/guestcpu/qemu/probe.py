"""Ask a QEMU binary what it can give a guest under one accelerator.

One process (``-machine none``) per accelerator answers everything, and the
expansions are pipelined (all sent at once), so a full probe of the ~130 x86 models
costs about as much as QEMU needs to answer.  The replies become a ``QemuCaps``
(``caps.caps_from_replies``); nothing here interprets them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.qmp_replies import CpuDefinition, parse_definitions, parse_target
from guestcpu.qemu.caps import QemuCaps, caps_from_replies
from guestcpu.qemu.process import DEFAULT_TIMEOUT, QemuError, QemuProcess, base_args, kvm_unusable_reason, run_sync

#: progress(step description, steps done, steps in all)
Progress = Callable[[str, int, int], None]

ACCELS = ("kvm", "tcg")
#: Bumped when a probe starts recording something new (2: the CPU types' property lists).
PROBE_FORMAT = 2


class AccelUnavailableError(QemuError):
    pass


class WrongArchError(InputError):
    """The binary emulates another architecture than the one asked for."""


def check_accel(accel: str) -> None:
    if accel not in ACCELS:
        raise AccelUnavailableError(f"unknown accelerator '{accel}'; expected one of {', '.join(ACCELS)}")
    if accel == "kvm":
        reason = kvm_unusable_reason()
        if reason:
            raise AccelUnavailableError(f"KVM is not usable here: {reason}; use --accel tcg")


def default_accel() -> str:
    return "kvm" if kvm_unusable_reason() is None else "tcg"


def _expansion_args(kind: str, name: str, props: Mapping[str, Any] | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"name": name}
    if props:
        model["props"] = dict(props)
    return {"type": kind, "model": model}


def property_typenames(definitions: Sequence[CpuDefinition]) -> list[str]:
    """The QOM types whose property lists the probe records: one named model, plus host and max.

    QEMU registers a CPU's properties on the architecture's base class, so every named
    model has the same list and only host/max add their own (QEMU 7.2 x86: 439 on all
    130 named models, host/max add host-cache-info and migratable; asking all 132 types
    would triple the probe's time).  tests/test_false_answers.py checks this on the real binary.
    """
    special = [d.typename for d in definitions if d.typename and d.name in ("host", "max")]
    named = [d.typename for d in definitions if d.typename and d.name not in ("host", "max", "base")]
    return sorted(set(special + named[:1]))


async def probe_replies(
    binary: str,
    accel: str,
    *,
    arch: str = "x86_64",
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every QMP reply a probe needs, keyed by what it is (raw ``return`` values)."""
    host_name = "host" if accel == "kvm" else "max"
    report = progress or (lambda _step, _done, _total: None)
    report(f"starting {binary} ({accel})", 0, 3)
    async with QemuProcess(binary, base_args("none", accel), timeout=timeout, name=f"probe-{accel}") as qemu:
        report("querying version, machines, CPU definitions and the host CPU", 1, 3)
        first: list[tuple[str, dict[str, Any] | None]] = [
            ("query-version", None),
            ("query-machines", None),
            ("query-cpu-definitions", None),
            ("query-cpu-model-expansion", _expansion_args("static", host_name)),
            ("query-cpu-model-expansion", _expansion_args("full", host_name)),
        ]
        if arch == "x86_64":
            first.append(("query-cpu-model-expansion", _expansion_args("static", host_name, {"migratable": False})))
        target = parse_target(await qemu.execute("query-target"))
        if target != arch:
            raise WrongArchError(f"{binary} is a QEMU for {target}, not {arch}; give a qemu-system-{arch} binary")
        answers = await qemu.execute_many(first)
        version, machines, definitions, host_static, host_full = answers[:5]
        nonmig = answers[5] if len(answers) > 5 else None
        parsed = parse_definitions(definitions)
        names = [d.name for d in parsed]
        typenames = property_typenames(parsed)
        report(f"expanding {len(names)} CPU models", 2, 3)
        expansions = await qemu.execute_many(
            ("query-cpu-model-expansion", _expansion_args("static", name)) for name in names
        )
        properties = await qemu.execute_many(("qom-list-properties", {"typename": t}) for t in typenames)
        report("done", 3, 3)
    return {
        "version": version,
        "machines": machines,
        "definitions": definitions,
        "host_static": host_static,
        "host_full": host_full,
        "host_static_nonmigratable": nonmig,
        "model_expansions": dict(zip(names, expansions, strict=True)),
        "model_properties": dict(zip(typenames, properties, strict=True)),
    }


def probe(
    binary: str,
    accel: str,
    *,
    arch: str = "x86_64",
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> QemuCaps:
    """Probe ``binary`` under ``accel`` (no cache): the capabilities QEMU reports."""
    check_accel(accel)
    start = time.perf_counter()
    replies = run_sync(probe_replies(binary, accel, arch=arch, timeout=timeout, progress=progress))
    elapsed = time.perf_counter() - start
    return caps_from_replies(
        arch=arch,
        accel=accel,
        binary=binary,
        fingerprint=fingerprint,
        probed_at=time.time(),
        probe_seconds=round(elapsed, 4),
        **replies,
    )
