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


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes): width, height, rows of RGB(A)."""
    import zlib

    width, height = png_size(data)
    depth, color, interlace = data[24], data[25], data[28]
    if depth != 8 or color not in (2, 6) or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color}, interlace {interlace}")
    channels = 3 if color == 2 else 4
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            upleft = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upleft
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def colour_count(data: bytes, rgb: tuple[int, int, int]) -> int:
    """How many pixels of a PNG have exactly this colour."""
    width, _height, rows = png_pixels(data)
    channels = len(rows[0]) // width if rows else 3
    target = bytes(rgb)
    return sum(1 for row in rows for x in range(0, len(row), channels) if row[x:x + 3] == target)
