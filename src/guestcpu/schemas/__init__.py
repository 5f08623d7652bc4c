"""JSON Schemas of guestcpu's own documents: the one definition of their shape.

guestcpu validates every pin, capture and capabilities document it reads against
these schemas (``validate``) before it uses a single field, so a damaged document
gets one error naming the field (as a JSON path) and what was expected; other tools
can read the same files (``guestcpu schema NAME`` prints one).

Two validators read the one schema: ``jsonschema_rs`` (compiled, some 400 times faster
on a capabilities document, which is what lets a fleet take thousands of captures)
says whether a document is valid; only when it is not does ``jsonschema`` find the
error to name, since its errors carry the path and keyword the message is built from.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guestcpu.errors import InputError, UnknownNameError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

_HERE = Path(__file__).parent
_PLAIN = re.compile(r"^[A-Za-z0-9_.+-]+$")
NAMES = ("pin", "host-capture", "qemu-caps")


class DocumentError(InputError):
    """A document that does not have the shape its schema gives."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.where = where
        super().__init__(f"{source} is damaged at {where}: {problem}")


def schema_text(name: str) -> str:
    if name not in NAMES:
        raise UnknownNameError("document schema", name, NAMES)
    return (_HERE / f"{name}.schema.json").read_text()


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text(name))
    return loaded


@functools.cache
def validator(name: str) -> Validator:
    """A validator for schema ``name`` that resolves the other shipped schemas by ``$id``."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry: Registry[Any] = Registry().with_resources(
        (schema(n)["$id"], Resource.from_contents(schema(n))) for n in NAMES
    )
    return Draft202012Validator(schema(name), registry=registry)


def json_path(parts: Any) -> str:
    """``["abi", "features", "aes"]`` -> ``$.abi.features.aes``; list indexes as ``[3]``."""
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN.match(part):
            text += f".{part}"
        else:  # an empty, spaced or control-character key: quoted, so the message stays one line
            text += f"[{json.dumps(part)}]"
    return text


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(error: Any) -> str:
    """What the schema wanted where ``error`` happened, in words."""
    keyword, rule = error.validator, error.validator_value
    if keyword == "type":
        kinds = rule if isinstance(rule, list) else [rule]
        return f"expected {' or '.join(kinds)}, found {_describe(error.instance)}"
    if keyword == "enum":
        return f"expected one of {', '.join(json.dumps(v) for v in rule)}, found {_describe(error.instance)}"
    if keyword == "const":
        return f"expected {json.dumps(rule)}, found {_describe(error.instance)}"
    if keyword == "required":
        missing = [key for key in rule if isinstance(error.instance, dict) and key not in error.instance]
        return f"member {', '.join(repr(m) for m in missing)} is missing"
    if keyword == "additionalProperties" and rule is False:
        return str(error.message)  # names the unexpected members
    if keyword in ("oneOf", "anyOf"):
        return f"{_describe(error.instance)} is not any of the allowed forms"
    return str(error.message)


@functools.cache
def fast_validator(name: str) -> Any:
    """The compiled validator of schema ``name`` (no network: the other schemas come from the registry)."""
    import jsonschema_rs

    registry = jsonschema_rs.Registry([(schema(n)["$id"], schema(n)) for n in NAMES])
    return jsonschema_rs.validator_for(schema(name), registry=registry)


def _fast_says_valid(name: str, doc: Any) -> bool:
    try:
        return bool(fast_validator(name).is_valid(doc))
    except (ValueError, TypeError, OverflowError):
        return False  # a value it cannot convert (an integer beyond 64 bits): the full check decides


def validate(name: str, doc: Any, source: str) -> None:
    """Raise one ``DocumentError`` naming the first misshapen field of ``doc`` (schema ``name``)."""
    if _fast_says_valid(name, doc):
        return
    from jsonschema.exceptions import best_match

    error = best_match(validator(name).iter_errors(doc))
    if error is not None:
        raise DocumentError(source, json_path(error.absolute_path), _expected(error))
