"""Reading and writing the lifecycle's documents (pins, captures), with clear errors.

Writes are atomic (a temporary file in the same directory, fsync, rename): a reader
sees the old document or the new one, and a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.files import read_json
from guestcpu.lifecycle import capture, pin
from guestcpu.lifecycle.capture import HostCapture, capture_from_document
from guestcpu.lifecycle.pin import Pin, pin_from_document

PIN = "pin"
CAPTURE = "capture"


def kind_of(doc: Any) -> str | None:
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == pin.SCHEMA:
        return PIN
    if schema == capture.SCHEMA:
        return CAPTURE
    return None


def read_pin(path: str) -> Pin:
    return pin_from_document(read_json(path, "a pin written by 'guestcpu define'"), path)


def read_capture(path: str) -> HostCapture:
    return capture_from_document(read_json(path, "a host capture written by 'guestcpu capture'"), path)


def read_document(path: str) -> Pin | HostCapture:
    """A pin or a capture, whichever the file holds."""
    doc = read_json(path, "a pin or a host capture")
    if kind_of(doc) == CAPTURE:
        return capture_from_document(doc, path)
    if kind_of(doc) == PIN:
        return pin_from_document(doc, path)
    found = doc.get("schema") if isinstance(doc, dict) else None
    raise InputError(
        f"{path} is neither a guestcpu pin nor a host capture (schema {found!r}); "
        f"expected {pin.SCHEMA!r} or {capture.SCHEMA!r}"
    )


def write_document(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (``-``: standard output)."""
    from guestcpu.qemu.cache import write_atomic

    text = json.dumps(data, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        return
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{path} is a directory; give a file name to write")
    if not target.parent.exists():
        raise InputError(f"cannot write {path}: directory {target.parent} does not exist")
    try:
        write_atomic(target, text.encode())
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
