"""Launch a guest paused, read back the CPU QEMU really built, and refuse a different one.

The readback (``read_live_cpu``) asks the vCPU object found through
``query-cpus-fast`` for ``feature-words`` and ``filtered-features`` (CPUID words),
every MSR-based feature property (those words are not in ``feature-words``),
``unavailable-features`` and the identity (vendor, family, model, stepping,
model-id).  ``live_bits`` turns the words into catalog features (pure).

``check_live`` compares with what was asked (``engine.update.update_live``):

* ``check='full'``: any missing or extra feature -> ``CpuMismatchError`` (exit 2);
* ``check='partial'``: judged against the capabilities before launch only;
* ``check='none'``: warnings only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.expand import update_feature
from guestcpu.engine.update import CpuMismatchError, LiveCheck, update_live
from guestcpu.errors import GuestCpuError, UnknownNameError
from guestcpu.formats.qmp_replies import parse_cpus_fast, qom_bool, qom_feature_words, qom_names, qom_scalar
from guestcpu.model.cpu import Check, CpuDefinition, Policy, Topology
from guestcpu.model.cpuid import CpuidData
from guestcpu.model.features import iter_bits
from guestcpu.qemu.caps import Expansion, QemuCaps
from guestcpu.qemu.cmdline import CpuArgs, cpu_args
from guestcpu.qemu.hypervisor import EffectiveCpu, effective_cpu, expansion_bits, hypervisor_compare
from guestcpu.qemu.process import (
    DEFAULT_TIMEOUT,
    QemuProcess,
    QemuStartError,
    base_args,
    run_sync,
)

_REGISTERS = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}
_IDENTITY_PROPS = ("vendor", "family", "model", "stepping", "model-id", "level", "xlevel")


@dataclass(frozen=True)
class LiveCpu:
    """What the vCPU really has."""

    enabled: int
    filtered: int
    unavailable: tuple[str, ...]
    identity: dict[str, Any] = field(default_factory=dict)
    qom_path: str = ""


def words_to_cpuid(words: Any, prop: str = "feature-words") -> CpuidData:
    """``X86CPUFeatureWordInfo`` list (a ``qom-get`` reply) -> CpuidData (one register value per word)."""
    leaves: dict[tuple[int, int], list[int]] = {}
    for word in qom_feature_words(words, prop):
        regs = leaves.setdefault((word.eax, word.ecx or 0), [0, 0, 0, 0])
        regs[_REGISTERS[word.register]] |= word.features
    return CpuidData({k: (v[0], v[1], v[2], v[3]) for k, v in leaves.items()})


def live_bits(words: Any, msr_props: dict[str, bool], catalog: Catalog) -> int:
    """Catalog features on in ``feature-words`` plus the MSR features whose property is true."""
    bits = catalog.features_from_cpuid(words_to_cpuid(words))
    for name, value in msr_props.items():
        if value and catalog.has_feature(name):
            bits |= 1 << catalog.feature(name).index
    return bits


def _msr_props(caps: QemuCaps, catalog: Catalog) -> list[str]:
    names = []
    for feature in catalog.features:
        if feature.kind != "msr":
            continue
        for spelling in (*feature.qemu_names, feature.name):
            if spelling in caps.known_props:
                names.append(spelling)
                break
    return names


async def read_live_cpu(qemu: QemuProcess, caps: QemuCaps, catalog: Catalog) -> LiveCpu:
    cpus = parse_cpus_fast(await qemu.execute("query-cpus-fast"))
    if not cpus:
        raise GuestCpuError("QEMU reports no vCPU to verify (query-cpus-fast is empty)")
    path = cpus[0].qom_path
    msr_names = _msr_props(caps, catalog)
    props = ["feature-words", "filtered-features", "unavailable-features", *_IDENTITY_PROPS, *msr_names]
    answers = await qemu.execute_many(("qom-get", {"path": path, "property": p}) for p in props)
    values = dict(zip(props, answers, strict=True))
    msr_values = {n: qom_bool(values[n], n) for n in msr_names}
    filtered = catalog.features_from_cpuid(words_to_cpuid(values["filtered-features"], "filtered-features"))
    unavailable = qom_names(values["unavailable-features"], "unavailable-features")
    for name in unavailable:
        if catalog.has_feature(name):
            filtered |= 1 << catalog.feature(name).index
    return LiveCpu(
        enabled=live_bits(values["feature-words"], msr_values, catalog),
        filtered=filtered,
        unavailable=unavailable,
        identity={k: qom_scalar(values[k], k) for k in _IDENTITY_PROPS},
        qom_path=path,
    )


class VendorMismatchError(GuestCpuError):
    exit_status = 2


def check_live(eff: EffectiveCpu, live: LiveCpu, catalog: Catalog, cpu: CpuDefinition | None = None) -> LiveCheck:
    """Differences between what was asked (``eff``, or ``cpu`` when the machine type adjusts it)
    and what the vCPU has, as update_live sees them."""
    asked = (cpu or eff.cpu).with_(check=Check.FULL)
    return update_live(asked, live.enabled, live.filtered, catalog)


def machine_adjusted(
    eff: EffectiveCpu, machine_bits: int, catalog: Catalog, machine: str
) -> tuple[CpuDefinition, str | None]:
    """The CPU to expect on ``machine``, whose compatibility properties may change the model.

    Capabilities are probed with ``-machine none``; an old machine type can turn model
    features off (pc-i440fx-1.4: ``arat``; pc-i440fx-2.12: EPYC's ``topoext``) or on.
    What the guest states explicitly (the ``+``/``-`` of ``-cpu``) stays as asked; the
    rest is what QEMU defines the model to be on that machine type.
    """
    explicit = (eff.features ^ eff.qemu_features) | eff.named
    off = eff.qemu_features & ~machine_bits & ~explicit
    on = machine_bits & ~eff.qemu_features & ~explicit
    if not off and not on:
        return eff.cpu, None
    features = list(eff.cpu.features)
    for i in iter_bits(off):
        update_feature(features, catalog.features[i].name, Policy.DISABLE)
    for i in iter_bits(on):
        update_feature(features, catalog.features[i].name, Policy.REQUIRE)
    changes = [f"-{n}" for n in catalog.names(off)] + [f"+{n}" for n in catalog.names(on)]
    note = f"{machine}'s compatibility properties change {eff.qemu_model}: {' '.join(changes)}"
    return eff.cpu.with_(features=tuple(features)), note


@dataclass
class RunOutcome:
    argv: list[str]
    cpu_args: CpuArgs
    effective: EffectiveCpu
    machine: str
    check: str
    verified: bool = False
    extra: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    vendor: str | None = None
    warnings: list[str] = field(default_factory=list)
    exit_status: int | None = None
    launched: bool = False
    #: what was learnt at launch (e.g. the machine type's compatibility properties)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "argv": self.argv,
            "cpu": self.cpu_args.cpu,
            "globals": list(self.cpu_args.globals),
            "qemu_model": self.effective.qemu_model,
            "resolution": self.effective.resolution,
            "machine": self.machine,
            "check": self.check,
            "launched": self.launched,
            "verified": self.verified,
            "extra_features": self.extra,
            "missing_features": self.missing,
            "vendor": self.vendor,
            "warnings": self.warnings,
            "notes": [*self.effective.notes, *self.notes],
            "exit_status": self.exit_status,
        }


def smp_args(topology: Topology | None) -> list[str]:
    """``-smp`` for a ``<topology>``: CPUID leaves 0x4/0xb/0x1f depend on it, so it is part of the ABI."""
    if topology is None:
        return []
    dies = topology.dies or 1
    clusters = topology.clusters or 1
    total = topology.sockets * dies * clusters * topology.cores * topology.threads
    spec = f"{total},sockets={topology.sockets}"
    if topology.dies is not None:
        spec += f",dies={dies}"
    if topology.clusters is not None:
        spec += f",clusters={clusters}"
    return ["-smp", f"{spec},cores={topology.cores},threads={topology.threads}"]


def guest_argv(
    binary: str, machine: str, accel: str, args: CpuArgs, extra: Sequence[str] = (), topology: Topology | None = None
) -> list[str]:
    return [binary, *base_args(machine, accel), "-S", "-m", "128", *smp_args(topology), *args.argv, *extra]


def plan_run(
    guest: CpuDefinition, caps: QemuCaps, catalog: Catalog, *, machine: str | None = None, extra: Sequence[str] = (),
    binary: str | None = None,
) -> RunOutcome:
    """Everything ``run`` would do, without launching (``--dry-run``); ``binary`` defaults to the probed one."""
    if machine is None:
        default = caps.default_machine()
        machine = (default.alias or default.name) if default else "pc"
    elif caps.machines and caps.machine(machine) is None:
        known = [m.name for m in caps.machines] + [m.alias for m in caps.machines if m.alias]
        raise UnknownNameError("machine type", machine, known, f"QEMU {caps.qemu_version}")
    eff = effective_cpu(guest, caps, catalog, machine=machine)
    args = cpu_args(eff, caps, catalog)
    argv = guest_argv(binary or caps.binary, machine, caps.accel, args, extra, guest.topology)
    return RunOutcome(argv, args, eff, machine, eff.check_name)


async def _launch(
    outcome: RunOutcome, caps: QemuCaps, catalog: Catalog, *, verify_only: bool, timeout: float,
    on_started: Callable[[RunOutcome], None] | None,
) -> RunOutcome:
    argv = outcome.argv
    async with QemuProcess(argv[0], argv[1:], timeout=timeout, name="guest") as qemu:
        outcome.launched = True
        if outcome.check != "partial":
            expected = None
            eff = outcome.effective
            if eff.qemu_model not in ("host", "max", "base"):
                reply = await qemu.execute(
                    "query-cpu-model-expansion", {"type": "static", "model": {"name": eff.qemu_model}}
                )
                machine_bits, _ = expansion_bits(Expansion.from_reply(reply), catalog)
                expected, note = machine_adjusted(eff, machine_bits, catalog, outcome.machine)
                if note:
                    outcome.notes.append(note)
            live = await read_live_cpu(qemu, caps, catalog)
            result = check_live(eff, live, catalog, expected)
            outcome.extra, outcome.missing = result.extra, result.missing
            vendor = live.identity.get("vendor")
            outcome.vendor = vendor if isinstance(vendor, str) else None
            wanted_vendor = outcome.effective.vendor_string
            vendor_wrong = bool(wanted_vendor and outcome.vendor and wanted_vendor != outcome.vendor)
            if result.extra or result.missing or vendor_wrong:
                message = str(CpuMismatchError(result.extra, result.missing)) if not result.ok else ""
                if vendor_wrong:
                    message = (message + "; " if message else "guest CPU doesn't match specification: ") + (
                        f"vendor is {outcome.vendor}, not {wanted_vendor}"
                    )
                if outcome.check == "full":
                    if not result.ok:
                        raise CpuMismatchError(result.extra, result.missing)
                    raise VendorMismatchError(message)
                outcome.warnings.append(message)
            else:
                outcome.verified = True
        if verify_only:
            return outcome
        await qemu.execute("cont")
        if on_started:
            on_started(outcome)
        status = await qemu.wait()
        outcome.exit_status = status
        if status != 0:
            raise QemuStartError(f"QEMU exited with status {status}", status, qemu.stderr_tail())
        return outcome


def run_guest(
    guest: CpuDefinition,
    caps: QemuCaps,
    catalog: Catalog,
    *,
    machine: str | None = None,
    verify_only: bool = False,
    dry_run: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    on_started: Callable[[RunOutcome], None] | None = None,
    binary: str | None = None,
) -> RunOutcome:
    """Start ``guest`` paused on this QEMU, verify its CPU per its ``check``, then run or stop it.

    Raises ``CpuMismatchError`` (exit status 2) when check='full' finds any missing or
    extra feature, or check='partial' finds the capabilities cannot give the CPU.
    """
    outcome = plan_run(guest, caps, catalog, machine=machine, extra=extra_args, binary=binary)
    if outcome.check == "partial" or dry_run:
        judged = hypervisor_compare(guest, caps, catalog, machine=outcome.machine)
        if judged.comparison.missing_features:
            if outcome.check == "partial" and not dry_run:
                raise CpuMismatchError([], judged.comparison.missing_features)
            outcome.warnings.append(
                f"QEMU ({caps.accel}) cannot give: {', '.join(judged.comparison.missing_features)}"
            )
        elif outcome.check == "partial":
            outcome.verified = True
    if dry_run:
        return outcome
    result: RunOutcome = run_sync(
        _launch(outcome, caps, catalog, verify_only=verify_only, timeout=timeout, on_started=on_started)
    )
    return result


__all__ = [
    "LiveCpu",
    "RunOutcome",
    "check_live",
    "live_bits",
    "plan_run",
    "read_live_cpu",
    "run_guest",
    "words_to_cpuid",
]
