"""Damaged documents never crash guestcpu: random mutations of real pins, captures,
capabilities documents and guest XML, fed to every command that reads them.

The documents are made here by the real commands (``define``, ``capture``) on this
machine's QEMU, plus the recorded capabilities document.  A mutation replaces a value
somewhere with one of another type, deletes a member, adds one, or (XML) cuts, swaps
or garbles text.  Every run must end with exit status 0, 1, 2 or 3, and a failure
must be one ``guestcpu: error:`` line: never a traceback.

The CLI runs in-process (click's CliRunner) so a case costs milliseconds, and the
documents are trimmed to a handful of models so that reading one stays cheap.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestcpu.cli.main import main
from json_paths import paths

pytestmark = pytest.mark.qemu

DATA = Path(__file__).parent / "data"
if shutil.which("qemu-system-x86_64") is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)

GUEST = """<domain type='qemu'>
  <name>fuzz</name>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <vcpu>2</vcpu>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
    <vendor>AMD</vendor>
    <feature policy='require' name='sse4.2'/>
    <feature policy='disable' name='svm'/>
  </cpu>
</domain>
"""
HOST_CPU = """<cpu>
  <arch>x86_64</arch>
  <model>qemu64</model>
  <vendor>AMD</vendor>
  <feature name='sse4.2'/>
</cpu>
"""
#: models kept when a capabilities document is trimmed for speed (the ones the commands use)
KEEP_MODELS = {"qemu64", "qemu64-v1", "kvm64", "kvm64-v1", "max", "host", "base", "Opteron_G1-v1"}


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def entry(args: tuple[str, ...]) -> None:
    """guestcpu's own entry point (its error handling included), for CliRunner."""
    main(list(args))


def run(args: Sequence[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(entry, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"guestcpu {' '.join(args)} raised {type(result.exception).__name__}:\n{trace}")
    return result.exit_code, result.stdout, result.stderr


def trim_caps(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["models"] = [m for m in doc["models"] if m["name"] in KEEP_MODELS]
    doc["machines"] = [m for m in doc["machines"] if m["name"].startswith("pc-q35-7") or m.get("is_default")]
    return doc


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("fuzz")
    (where / "guest.xml").write_text(GUEST)
    (where / "host.xml").write_text(HOST_CPU)
    status, _, err = run(["define", str(where / "guest.xml"), "-o", str(where / "pin.json")])
    assert status == 0, err
    status, _, err = run(["capture", "-o", str(where / "capture.json")])
    assert status == 0, err
    capture = json.loads((where / "capture.json").read_text())
    capture["accels"] = {accel: trim_caps(caps) for accel, caps in capture["accels"].items()}
    (where / "capture.json").write_text(json.dumps(capture))
    caps = trim_caps(json.loads((DATA / "qemu-7.2" / "caps-tcg.json").read_text()))
    (where / "caps.json").write_text(json.dumps(caps))
    # The trimmed, unmutated documents are accepted by every command below.
    for args in commands(where, "pin.json", "capture.json", "caps.json", "guest.xml"):
        status, _, err = run(args)
        assert status in (0, 2, 3), f"{args}: {err}"
    return {
        "dir": where,
        "pin": json.loads((where / "pin.json").read_text()),
        "capture": capture,
        "caps": caps,
    }


def commands(where: Path, pin: str, capture: str, caps: str, guest: str) -> list[list[str]]:
    p = {name: str(where / name) for name in (pin, capture, caps, guest, "pin.json", "capture.json", "host.xml")}
    return [
        ["migrate-check", p[pin], "--to", p[capture]],
        ["restore-check", p[pin], "--to", p[capture], "--json"],
        ["diff", p["pin.json"], p[pin]],
        ["diff", p["capture.json"], p[capture]],
        ["compare", "--caps", p[caps], p[guest]],
        ["compare", "--caps", p[capture], p[guest], "--json"],
        ["compare", p[capture], p[guest]],
        ["baseline", "--caps", p[caps], p["host.xml"]],
        ["baseline", p[capture], p["host.xml"]],
    ]


WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64), st.floats(allow_nan=False), st.text(max_size=8),
    st.just([]), st.just({}), st.lists(st.one_of(st.integers(), st.none(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.one_of(st.integers(), st.booleans(), st.text(max_size=3)), max_size=2),
)


@st.composite
def mutation(draw: st.DrawFn, doc: Any) -> tuple[tuple[Any, ...], str, Any]:
    """(where, what, value): drawn apart from the document so that a failure prints briefly."""
    where = draw(st.sampled_from(paths(doc)))
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"])) if where else "replace"
    value = draw(st.text(min_size=1, max_size=6)) if action == "add" else None
    return where, action, (value, draw(WEIRD)) if action == "add" else draw(WEIRD)


def apply(doc: Any, change: tuple[tuple[Any, ...], str, Any]) -> Any:
    where, action, value = change
    if not where:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    if action == "delete":
        del parent[where[-1]]
    elif action == "add":
        target = parent[where[-1]] if isinstance(parent[where[-1]], dict) else parent
        if isinstance(target, dict):
            target[value[0]] = value[1]
    else:
        parent[where[-1]] = value
    return doc


FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


def check(args: list[str]) -> None:
    status, _, err = run(args)
    assert status in (0, 1, 2, 3), f"{args}: exit {status}\n{err}"
    if status == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("guestcpu: error: "), f"{args}:\n{err}"
        assert "Traceback" not in err and "Error:" not in lines[0].removeprefix("guestcpu: error: ")[:40]


@pytest.mark.parametrize("kind", ["pin", "capture", "caps"])
@FUZZ
@given(data=st.data())
def test_mutated_documents_get_one_clear_error(kind: str, docs: dict[str, Any], data: st.DataObject) -> None:
    where: Path = docs["dir"]
    name = f"mutated-{kind}.json"
    (where / name).write_text(json.dumps(apply(docs[kind], data.draw(mutation(docs[kind])))))
    names = {"pin": "pin.json", "capture": "capture.json", "caps": "caps.json", "guest": "guest.xml"}
    names[kind] = name
    candidates = [a for a in commands(where, names["pin"], names["capture"], names["caps"], names["guest"])
                  if name in " ".join(a)]
    check(data.draw(st.sampled_from(candidates)))


@st.composite
def mutated_xml(draw: st.DrawFn, text: str) -> str:
    action = draw(st.sampled_from(["cut", "insert", "replace-value", "truncate", "swap-tag"]))
    if action == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if action == "cut":
        start = draw(st.integers(0, len(text) - 1))
        return text[:start] + text[start + draw(st.integers(1, 20)):]
    if action == "insert":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["<", ">", "&", "&amp;", "'", "\"", "<!DOCTYPE x [<!ENTITY e 'x'>]>", "\x00",
                                     "<feature/>", "<model>", "</cpu>", "é", "]]>"]))
        return text[:at] + junk + text[at:]
    if action == "swap-tag":
        tags = ["cpu", "model", "feature", "vendor", "domain", "os", "vcpu"]
        return text.replace(draw(st.sampled_from(tags)), draw(st.sampled_from([*tags, "x", ""])), 1)
    values = ["qemu64", "svm", "require", "disable", "AMD", "exact", "full", "forbid", "2", "pc-q35-7.2", "qemu"]
    old = draw(st.sampled_from(values))
    new = draw(st.one_of(st.text(max_size=6), st.sampled_from(["-1", "0", "99999999999999999999", "host-model",
                                                              "optional", "force", "Intel", "kvm"])))
    return text.replace(old, new, 1)


@FUZZ
@given(data=st.data())
def test_mutated_guest_xml_gets_one_clear_error(docs: dict[str, Any], data: st.DataObject) -> None:
    where: Path = docs["dir"]
    source = data.draw(st.sampled_from([GUEST, HOST_CPU]))
    (where / "mutated-guest.xml").write_text(data.draw(mutated_xml(source)), errors="surrogatepass")
    bad = str(where / "mutated-guest.xml")
    args = data.draw(st.sampled_from([
        ["compare", "--caps", str(where / "caps.json"), bad],
        ["compare", str(where / "host.xml"), bad, "--json"],
        ["compare", bad, str(where / "guest.xml")],
        ["baseline", bad, str(where / "host.xml")],
        ["baseline", "--caps", str(where / "caps.json"), bad],
        ["cmdline", "--caps", str(where / "caps.json"), bad],
    ]))
    check(args)


def test_a_pin_edited_to_host_model_is_refused_by_every_command(docs: dict[str, Any]) -> None:
    where: Path = docs["dir"]
    edited = copy.deepcopy(docs["pin"])
    edited["policy"]["mode"] = "host-model"
    edited["policy"]["recompute_on_fresh_start"] = True
    (where / "host-model.json").write_text(json.dumps(edited))
    for args in (["start", "--verify-only", str(where / "host-model.json")],
                 ["migrate-check", str(where / "host-model.json"), "--to", str(where / "capture.json")]):
        status, _, err = run(args)
        assert status == 1 and "seal does not match" in err and "edited by hand" in err, err
