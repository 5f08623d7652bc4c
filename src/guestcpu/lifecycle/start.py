"""Start a guest from its pin: launch paused, verify the vCPU against the pin, then run.

Verification is libvirt's ``check='full'`` for every pin ``define`` wrote: any feature
QEMU added, dropped or filtered, and any identity property that differs, stops the
guest before a single instruction runs (``PinMismatchError``, exit status 2).  ``run``
(a pin made in memory from a loose definition) may ask for a weaker policy on the same
path: ``check='partial'`` refuses what is missing and warns about the rest,
``check='none'`` only warns.

A KVM that refuses an MSR QEMU sets (a nested KVM advertising IA32_ARCH_CAPABILITIES
that it cannot set) kills QEMU at start-up with an assertion; that becomes one error
naming the MSR, the pinned features that make QEMU write it, and what would start.

A *fresh* start of a host-relative guest (host-model, ``match='minimum'``,
host-passthrough, maximum) first recomputes the pin from the current capabilities;
an incoming migration or a restore (``fresh=False``) uses the pin exactly as it is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError
from guestcpu.lifecycle.argv import check_extra_args, guest_args
from guestcpu.lifecycle.define import Target, recompute
from guestcpu.lifecycle.gates import msr_refusal
from guestcpu.lifecycle.live import LiveCpu, LiveMismatch, PinMismatchError, compare_live, read_live
from guestcpu.lifecycle.migration import wait_incoming
from guestcpu.lifecycle.pin import Pin
from guestcpu.model.cpu import Check
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.offer import known_features
from guestcpu.qemu.process import DEFAULT_TIMEOUT, QemuProcess, QemuStartError


@dataclass(frozen=True)
class StartPlan:
    pin: Pin
    recomputed: bool
    previous_fingerprint: str | None = None


def plan_start(
    pin: Pin, target: Target, catalog: Catalog, *, fresh: bool, timeout: float = DEFAULT_TIMEOUT
) -> StartPlan:
    """The pin this start runs with: recomputed only for a fresh start of a host-relative guest."""
    if pin.abi.arch != target.caps.arch:
        raise GuestCpuError(
            f"the pin is for a {pin.abi.arch} guest but QEMU {target.binary} was probed as {target.caps.arch}; "
            f"start it with a qemu-system-{pin.abi.arch} binary"
        )
    if fresh and pin.policy.recompute:
        renewed = recompute(pin, target, catalog, timeout)
        return StartPlan(renewed, True, pin.fingerprint)
    return StartPlan(pin, False)


@dataclass
class RunningGuest:
    qemu: QemuProcess
    live: LiveCpu
    argv: list[str]
    launch_seconds: float
    #: what differs from the pin (empty under check='full': a difference stops the guest)
    mismatch: LiveMismatch = field(default_factory=LiveMismatch)

    @property
    def verified(self) -> bool:
        return self.mismatch.ok


def _refused(mismatch: LiveMismatch, check: Check) -> bool:
    if check is Check.NONE:
        return False
    if check is Check.PARTIAL:
        return bool(mismatch.missing or mismatch.other)
    return not mismatch.ok


@contextlib.asynccontextmanager
async def verified_guest(
    pin: Pin,
    binary: str,
    catalog: Catalog,
    *,
    known: Iterable[str] | None = None,
    caps: QemuCaps | None = None,
    extra_args: Sequence[str] = (),
    incoming: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    name: str = "guest",
    check: Check = Check.FULL,
) -> AsyncIterator[RunningGuest]:
    """A paused QEMU whose vCPU has been checked against ``pin``; stopped on leaving.

    ``caps``: the binary's capabilities (the CPU's QOM type name and known features come from them).
    """
    check_extra_args(extra_args)
    if known is None and caps is not None:
        known = known_features(caps)
    args = guest_args(pin.abi, known, caps=caps)
    args += list(extra_args)
    if incoming is not None:
        args += ["-incoming", incoming]
    start = time.perf_counter()
    try:
        async with QemuProcess(binary, args, timeout=timeout, name=name) as qemu:
            live = await read_live(qemu, pin.abi, known)
            mismatch = compare_live(pin.abi, live, catalog)
            if _refused(mismatch, check):
                raise PinMismatchError(mismatch, f"QEMU {binary}, {pin.abi.accel}, {pin.abi.machine}")
            yield RunningGuest(qemu, live, [binary, *args], time.perf_counter() - start, mismatch)
    except QemuStartError as exc:
        refusal = msr_refusal(exc.stderr_tail, pin.abi, catalog, f"{binary}, {pin.abi.accel}, {pin.abi.machine}")
        if refusal is None:
            raise
        raise refusal from None


@dataclass(frozen=True)
class StartResult:
    plan: StartPlan
    live: LiveCpu
    argv: list[str]
    launch_seconds: float
    exit_status: int | None = None
    mismatch: LiveMismatch = field(default_factory=LiveMismatch)


async def start_async(
    plan: StartPlan,
    target: Target,
    catalog: Catalog,
    *,
    verify_only: bool = False,
    extra_args: Sequence[str] = (),
    incoming: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_verified: Callable[[RunningGuest], None] | None = None,
    check: Check = Check.FULL,
) -> StartResult:
    """Launch, verify (per ``check``) and (unless ``verify_only``) run the guest until QEMU exits."""
    async with verified_guest(
        plan.pin,
        target.binary,
        catalog,
        caps=target.caps,
        extra_args=extra_args,
        incoming=incoming,
        timeout=timeout,
        check=check,
    ) as guest:
        if on_verified is not None:
            on_verified(guest)
        status = None
        if not verify_only:
            if incoming is not None:
                # The destination stays paused (-S) until the guest's state has arrived.
                await wait_incoming(guest.qemu)
            await guest.qemu.execute("cont")
            status = await guest.qemu.wait()
        return StartResult(plan, guest.live, guest.argv, guest.launch_seconds, status, guest.mismatch)
