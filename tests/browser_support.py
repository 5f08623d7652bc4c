"""Headless Chromium (Debian's ``chromium`` package) for tests of the HTML pages we write.

Each call is one fresh browser with a new, empty profile in a temporary folder and
everything that would reach the network switched off; pages are opened from
``file://`` URLs. ``--no-sandbox`` because the tests run as root in CI.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 120
QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
    "--no-default-browser-check", "--disable-features=Translate,MediaRouter,OptimizationHints",
)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable_reason() -> str | None:
    """Why no browser can be had, or None. Only a non-root run without the package skips."""
    if chromium_binary() is not None:
        return None
    if os.geteuid() != 0:
        return "Chromium is not installed and the tests do not run as root ('make test' installs it)"
    raise RuntimeError("Chromium is not installed: run 'make test' (it installs Debian's chromium)")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises ValueError if it is not a PNG)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@dataclass(frozen=True)
class Chromium:
    binary: str

    def _run(self, extra: list[str], page: Path) -> subprocess.CompletedProcess[bytes]:
        with tempfile.TemporaryDirectory(prefix="guestcpu-chromium-") as home:
            env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/config",
                   "XDG_CACHE_HOME": f"{home}/cache"}
            argv = [self.binary, *QUIET_FLAGS, f"--user-data-dir={home}/profile", *extra,
                    page.resolve().as_uri()]
            result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, env=env,
                                    stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"chromium exited {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}")
        return result

    def dump_dom(self, page: Path) -> str:
        """The DOM after the page loaded (and its scripts ran), serialized as HTML."""
        return self._run(["--dump-dom", "--virtual-time-budget=2000"], page).stdout.decode()

    def screenshot(self, page: Path, out: Path, width: int = 1280, height: int = 900) -> bytes:
        """Render the page into a PNG of exactly width x height pixels; returns its bytes."""
        out = out.resolve()
        out.unlink(missing_ok=True)
        self._run([f"--screenshot={out}", f"--window-size={width},{height}", "--virtual-time-budget=2000"], page)
        if not out.exists():
            raise RuntimeError(f"chromium wrote no screenshot to {out}")
        return out.read_bytes()
