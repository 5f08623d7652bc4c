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
