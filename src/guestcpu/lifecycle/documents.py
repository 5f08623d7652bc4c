"""Reading and writing the lifecycle's documents (pins, captures), with clear errors.

Writes go through ``formats.files.write_outputs``: atomic (a temporary file in the
same directory, fsync, rename), never through a planted symlink, with the umask
respected; a reader sees the old document or the new one, and a failure leaves
nothing half-written.
"""

from __future__ import annotations

import json
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.files import DEFAULT_MODE, Output, read_json, write_outputs
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


def document_output(path: str, data: Any, mode: int = DEFAULT_MODE, what: str = "a document") -> Output:
    """``data`` as the JSON text of an output file (written with ``formats.files.write_outputs``)."""
    return Output(path, json.dumps(data, indent=2) + "\n", mode, what)


def write_document(path: str, data: Any, mode: int = DEFAULT_MODE) -> None:
    """Write ``data`` as JSON to ``path`` atomically (``-``: standard output)."""
    write_outputs([document_output(path, data, mode)])


def check_pin_owner(path: str, name: str | None, uuid: str | None, force: bool = False) -> None:
    """Refuse to write a guest's pin over another guest's pin (another name or UUID) unless ``force``."""
    if force or path == "-":
        return
    try:
        doc = read_json(path, "a pin")
    except InputError:
        return  # absent, or not JSON: nothing of another guest's to lose
    if kind_of(doc) != PIN:
        return
    theirs = (doc.get("name"), doc.get("uuid"))
    if theirs == (None, None) or theirs == (name, uuid):
        return
    def who(n: Any, u: Any) -> str:
        return f"guest {n or '(no name)'} (uuid {u or 'none'})"
    raise InputError(
        f"{path} holds the pin of {who(*theirs)}, not of {who(name, uuid)}; give another -o file, or --force "
        "to replace it"
    )
