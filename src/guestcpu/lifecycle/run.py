"""``run`` and ``cmdline``: a loose guest definition pinned in memory, then the verified start.

There is one way to launch a CPU: a pin (``argv``) held against the live vCPU
(``live``).  ``run`` pins the definition exactly as ``define`` would (nothing is
written) and starts that pin; the definition's ``check`` is the policy of the
readback:

* ``full`` (default): any missing or extra feature, or any identity difference
  (vendor, family/model/stepping, level, xlevel, model-id), stops QEMU (exit 2);
* ``partial``: refused before launch when this QEMU's capabilities cannot give a
  required feature, and after launch when a required feature or the identity
  differs; extra features are warnings;
* ``none``: every difference is a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guestcpu.catalog.catalog import Catalog
from guestcpu.lifecycle.argv import check_extra_args, cpu_args, guest_args
from guestcpu.lifecycle.define import Target, pin_cpu_async
from guestcpu.lifecycle.definition import GuestDefinition
from guestcpu.lifecycle.live import LiveMismatch, PinMismatchError
from guestcpu.lifecycle.pin import Pin
from guestcpu.lifecycle.start import RunningGuest, StartPlan, StartResult, start_async
from guestcpu.model.cpu import Check
from guestcpu.qemu.offer import known_features, supported_features
from guestcpu.qemu.process import DEFAULT_TIMEOUT, run_sync


@dataclass(frozen=True)
class RunPlan:
    """The in-memory pin of a definition and the QEMU command line that starts it."""

    pin: Pin
    check: Check
    argv: list[str]
    #: ``-cpu`` and its ``-global``: the part ``cmdline`` prints
    cpu_argv: list[str]
    #: required features the capabilities say this QEMU cannot give (check='partial' refuses them)
    unavailable: tuple[str, ...] = ()

    @property
    def cpu(self) -> str:
        return self.cpu_argv[1]


def plan_run(
    guest: GuestDefinition, target: Target, catalog: Catalog, *, extra_args: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> RunPlan:
    """Pin ``guest`` for ``target`` in memory (a QEMU is asked to expand it) and build its command line."""
    check_extra_args(extra_args)
    cpu = guest.cpu
    pin: Pin = run_sync(pin_cpu_async(cpu, target, catalog, topology=guest.topology, timeout=timeout))
    known = known_features(target.caps)
    argv = [target.binary, *guest_args(pin.abi, known, caps=target.caps), *extra_args]
    unavailable = tuple(sorted(set(pin.abi.required) - supported_features(target.caps)))
    check = (cpu.check if cpu is not None else None) or Check.FULL
    return RunPlan(pin, check, argv, cpu_args(pin.abi, target.caps, known), unavailable)


def run_plan(
    plan: RunPlan, target: Target, catalog: Catalog, *, verify_only: bool = False, extra_args: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT, on_verified: Callable[[RunningGuest], None] | None = None,
) -> StartResult:
    """Start the plan's pin paused, hold the vCPU against it per ``plan.check``, then run (or stop)."""
    if plan.check is Check.PARTIAL and plan.unavailable:
        raise PinMismatchError(LiveMismatch(missing=list(plan.unavailable)),
                               f"QEMU {target.caps.qemu_version}, {target.accel}, check='partial'", launched=False)
    result: StartResult = run_sync(
        start_async(StartPlan(plan.pin, False), target, catalog, verify_only=verify_only, extra_args=extra_args,
                    timeout=timeout, on_verified=on_verified, check=plan.check)
    )
    return result
