"""JSON Schemas of guestcpu's own documents, for the software that reads them.

guestcpu itself checks documents in code (with one clear error each); these files
describe the same shapes to other tools (``guestcpu schema NAME`` prints one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guestcpu.errors import UnknownNameError

_HERE = Path(__file__).parent
NAMES = ("pin", "host-capture", "qemu-caps")


def schema_text(name: str) -> str:
    if name not in NAMES:
        raise UnknownNameError("document schema", name, NAMES)
    return (_HERE / f"{name}.schema.json").read_text()


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text(name))
    return loaded
