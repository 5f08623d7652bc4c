"""The two readers of one schema agree: ``jsonschema_rs`` (the fast check every document
gets) and ``jsonschema`` (the one that names the error) accept and refuse the same
documents, over random damage to real pins, captures and capabilities documents.

A disagreement either way would be a bug: the fast check saying "valid" where the full
one would refuse lets a damaged document in; the reverse makes ``validate`` look for an
error the full check cannot find.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestcpu.catalog.loader import load_catalog
from guestcpu.fleet.cpu_pin import pin_from_caps
from guestcpu.fleet.synthetic import capture_document, host_kinds
from guestcpu.lifecycle.pin import pin_to_document
from guestcpu.qemu.cache import read_caps_file
from guestcpu.qemu.caps import to_document
from guestcpu.schemas import DocumentError, _fast_says_valid, validate, validator
from json_paths import at, paths

DATA = Path(__file__).parent / "data" / "qemu-7.2"
KEEP = {"qemu64", "qemu64-v1", "Skylake-Client-v4", "EPYC-v3", "max", "host"}


def _trimmed_caps() -> dict[str, Any]:
    doc = to_document(read_caps_file(str(DATA / "caps-kvm.json")))
    doc["models"] = [m for m in doc["models"] if m["name"] in KEEP]
    doc["machines"] = doc["machines"][:4]
    return doc


def _documents() -> dict[str, dict[str, Any]]:
    catalog = load_catalog(dropin_dirs=[])
    caps = read_caps_file(str(DATA / "caps-kvm.json"))
    pin = pin_from_caps(caps, "Skylake-Client-v4", {"aes": False}, "pc-q35-7.2", catalog, note="test")
    host = caps.host_static.props if caps.host_static else {}
    kind = host_kinds({"this host": host}, caps, variations=("",))[0]
    capture = capture_document(kind, "host1")
    capture["accels"] = {"kvm": _trimmed_caps()}
    return {"pin": pin_to_document(pin), "host-capture": capture, "qemu-caps": _trimmed_caps()}


DOCUMENTS = _documents()
#: values of every JSON type (and a few the schemas single out: empty, negative, a huge integer)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8), st.just(""),
    st.builds(list), st.builds(dict),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.booleans(), max_size=2),
)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(DOCUMENTS)))
    doc = copy.deepcopy(DOCUMENTS[name])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        containers = [p for p in paths(doc) if isinstance(at(doc, p), (dict, list))]
        where = at(doc, draw(st.sampled_from(containers)))
        keys = list(where) if isinstance(where, dict) else list(range(len(where)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not keys:
            if isinstance(where, dict):
                where[draw(st.text(max_size=6))] = draw(VALUES)
            else:
                where.append(draw(VALUES))
        else:
            key = draw(st.sampled_from(keys))
            if action == "delete":
                del where[key]
            else:
                where[key] = draw(VALUES)
    return name, doc


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_real_documents_are_valid_to_both(name: str) -> None:
    doc = DOCUMENTS[name]
    assert validator(name).is_valid(doc)
    assert _fast_says_valid(name, doc)
    validate(name, doc, name)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_both_validators_agree_on_damaged_documents(case: tuple[str, Any]) -> None:
    name, doc = case
    full = validator(name).is_valid(doc)
    if full:
        # the fast one may only refuse what it cannot convert (an integer beyond 64 bits)
        assert _fast_says_valid(name, doc) or any(abs(v) >= 2**63 for v in _ints(doc)), (
            "the fast check refused a valid document")
    else:
        assert not _fast_says_valid(name, doc), "the fast check let a damaged document in"
        with pytest.raises(DocumentError):
            validate(name, doc, name)


def _ints(doc: Any) -> list[int]:
    if isinstance(doc, dict):
        return [i for v in doc.values() for i in _ints(v)]
    if isinstance(doc, list):
        return [i for v in doc for i in _ints(v)]
    return [doc] if isinstance(doc, int) and not isinstance(doc, bool) else []


def test_a_valid_document_the_fast_check_cannot_convert_is_still_accepted() -> None:
    doc = copy.deepcopy(DOCUMENTS["qemu-caps"])
    doc["probed_at"] = 2**80  # a number, so valid; beyond what a 64-bit integer holds
    assert validator("qemu-caps").is_valid(doc)
    validate("qemu-caps", doc, "caps")  # no error: the full check decided
