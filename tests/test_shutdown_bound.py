"""SIGTERM/SIGHUP end guestcpu within a bound even when the orderly stop is lost (a swallowed cancellation)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A coroutine that swallows its cancellation: the orderly stop never ends it.
PROGRAM = textwrap.dedent("""
    import asyncio, sys
    from guestcpu.qemu import process

    process._SHUTDOWN_BOUND = 1.0

    async def stubborn() -> None:
        print("ready", flush=True)
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    process.run_sync(stubborn())
""")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_lost_cancellation_still_ends_guestcpu_with_one_message(signum: int, status: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        start = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(30) == status
        assert time.monotonic() - start < 25
        _, err = proc.communicate()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"guestcpu: error: stopped by {signal.Signals(signum).name}")
    finally:
        proc.kill()
        proc.wait()


# The race asyncio.wait_for (3.11) has: a cancellation swallowed while a QMP step finishes, then a
# wait on QEMU.  A stand-in QEMU in its own process group: guestcpu must tell it to quit itself.
SWALLOWED = textwrap.dedent("""
    import asyncio, sys
    from guestcpu.qemu import process

    async def lost_cancel_then_wait() -> None:
        qemu = await asyncio.create_subprocess_exec("sleep", "3600", start_new_session=True)
        process._LIVE_GROUPS.add(qemu.pid)
        print("ready", flush=True)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # lost, as in the race
        await qemu.wait()

    try:
        process.run_sync(lost_cancel_then_wait())
    except process.TerminatedError as stop:  # what the CLI does with it
        print(f"guestcpu: error: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)
""")


def test_a_swallowed_cancellation_still_quits_qemu_in_order() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert time.monotonic() - start < 15  # well before the watchdog's bound
        _, err = proc.communicate()
        assert err.strip().splitlines() == ["guestcpu: error: stopped by SIGTERM; QEMU was asked to quit and is gone"]
    finally:
        proc.kill()
        proc.wait()
