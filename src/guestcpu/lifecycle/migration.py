"""Live-migrate a running guest over QMP and wait for the outcome.

The destination must already run with the *same pin* and ``-incoming`` (started by
``start.verified_guest(..., incoming=URI)``, which verified its vCPU before anything
was sent); this module only drives the source side.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from guestcpu.errors import GuestCpuError
from guestcpu.formats.qmp_replies import MigrationStatus, parse_migration, parse_status
from guestcpu.lifecycle.compat import Verdict, check_destination
from guestcpu.lifecycle.pin import Pin
from guestcpu.qemu.caps import QemuCaps
from guestcpu.qemu.process import QemuProcess

_POLL_SECONDS = 0.02
_DONE = ("completed", "failed", "cancelled")


class MigrationError(GuestCpuError):
    pass


@dataclass(frozen=True)
class MigrationResult:
    status: str
    seconds: float
    #: QEMU's own figures (ms and bytes), when it reports them
    total_time_ms: int | None = None
    downtime_ms: int | None = None
    transferred_bytes: int | None = None


async def migrate(source: QemuProcess, uri: str, *, timeout: float = 120.0) -> MigrationResult:
    """Send the guest to ``uri`` and wait until QEMU reports completion (or failure)."""
    start = time.perf_counter()
    await source.execute("migrate", {"uri": uri})
    info = MigrationStatus("none")
    while time.perf_counter() - start < timeout:
        info = parse_migration(await source.execute("query-migrate"))
        if info.status in _DONE:
            break
        await asyncio.sleep(_POLL_SECONDS)
    else:
        await source.execute("migrate_cancel")
        raise MigrationError(f"migration to {uri} did not finish within {timeout:g} s; it was cancelled")
    seconds = time.perf_counter() - start
    status = info.status
    if status != "completed":
        raise MigrationError(f"migration to {uri} {status}: {info.error or 'no reason given by QEMU'}")
    return MigrationResult(
        status=status,
        seconds=seconds,
        total_time_ms=info.total_ms,
        downtime_ms=info.downtime_ms,
        transferred_bytes=info.transferred_bytes,
    )


async def wait_incoming(destination: QemuProcess, *, timeout: float | None = None) -> str:
    """Wait until an incoming migration has arrived; the destination's run state then."""
    start = time.perf_counter()
    while timeout is None or time.perf_counter() - start < timeout:
        status = parse_status(await destination.execute("query-status"))
        if status != "inmigrate":
            return status
        await asyncio.sleep(_POLL_SECONDS * 5)
    raise MigrationError(f"no incoming migration arrived within {timeout:g} s")


class MigrationRefusedError(GuestCpuError):
    """The destination cannot give the pinned CPU; nothing was sent (exit status 2)."""

    exit_status = 2

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(verdict.summary())


async def migrate_pinned(
    source: QemuProcess, pin: Pin, destination: QemuCaps | None, uri: str, *, name: str = "the destination",
    timeout: float = 120.0,
) -> MigrationResult:
    """Migrate only if the destination can give exactly ``pin``: the check comes before anything is sent."""
    verdict = check_destination(pin, destination, purpose="migrate", destination=name)
    if not verdict.ok:
        raise MigrationRefusedError(verdict)
    return await migrate(source, uri, timeout=timeout)
