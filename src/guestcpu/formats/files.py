"""Reading the files users name on the command line, with one clear error each.

``-`` means standard input.  Every failure says which file and what was expected.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from guestcpu.errors import InputError


def read_bytes(path: str, what: str = "a file") -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected {what}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; expected {what}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def read_json(path: str, what: str) -> Any:
    data = read_bytes(path, what)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not JSON ({exc}); expected {what}") from None
