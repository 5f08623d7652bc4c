"""The lifecycle commands end to end, as real processes: the README walk-through and bad input.

define -> start --verify-only -> capture -> migrate-check -> diff, with --json; every
refusal exits 2 and names the features; every bad input exits 1 with one line on
stderr and leaves nothing on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guestcpu.formats.qemu_json import split_replies
from guestcpu.lifecycle.capture import HostCapture, caps_on_other_cpu, capture_from_document, capture_to_document
from guestcpu.qemu.cache import load_caps
from qemu_support import CPUTESTDATA, QEMU, needs_kvm

pytestmark = pytest.mark.qemu


if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)

WEB01 = """<domain type='qemu'>
  <name>web01</name>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>Haswell-noTSX</model>
    <feature policy='disable' name='pcid'/>
    <feature policy='disable' name='x2apic'/>
    <feature policy='disable' name='tsc-deadline'/>
    <feature policy='disable' name='invpcid'/>
  </cpu>
</domain>
"""


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


def guestcpu(*args: str | Path, cache_home: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


def as_json(*args: str | Path, cache_home: Path, code: int = 0) -> Any:
    return json.loads(guestcpu(*args, "--json", cache_home=cache_home, code=code).stdout)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("guestcpu: error: ")
    return lines[0]


# -- the walk-through --------------------------------------------------------------------------


def test_walk_through(tmp_path: Path, cache_home: Path) -> None:
    guest = tmp_path / "web01.xml"
    guest.write_text(WEB01)
    pin_file, cpu_xml, host_file = tmp_path / "web01.pin.json", tmp_path / "web01.cpu.xml", tmp_path / "host.json"

    defined = as_json("define", guest, "-o", pin_file, "--libvirt-xml", cpu_xml, cache_home=cache_home)
    pin = json.loads(pin_file.read_text())
    assert defined["pin"] == pin and defined["guest"] == "web01"
    assert pin["abi"]["model"] == "Haswell-v2" and pin["abi"]["machine"] == "pc-q35-7.2"
    assert pin["resolution"] == {"requested": "Haswell-noTSX", "resolved": "Haswell-v2", "rule": "alias", "notes": []}
    assert cpu_xml.read_text().startswith("<cpu mode='custom' match='exact' check='full'>")

    started = as_json("start", pin_file, "--verify-only", cache_home=cache_home)
    assert started["verified"] and started["fingerprint"] == pin["fingerprint"] and not started["recomputed"]
    assert "-cpu" in started["argv"] and "-S" in started["argv"]

    captured = as_json("capture", "-o", host_file, cache_home=cache_home)
    assert set(captured["accels"]) | set(captured["unavailable"]) == {"kvm", "tcg"}
    capture = json.loads(host_file.read_text())
    assert capture["schema"] == "guestcpu/host-capture" and capture["cpuid"].startswith("<cpudata arch='x86'>")

    checked = as_json("migrate-check", pin_file, "--to", host_file, cache_home=cache_home)
    assert checked["ok"] and checked["purpose"] == "migrate" and checked["fingerprint"] == pin["fingerprint"]
    restored = as_json("restore-check", pin_file, cache_home=cache_home)
    assert restored["ok"] and restored["purpose"] == "restore"

    same = as_json("diff", pin_file, pin_file, cache_home=cache_home)
    assert same["same_abi"]
    no_change = as_json("diff", host_file, host_file, cache_home=cache_home)
    assert no_change["accels"]["tcg"]["models_became_unusable"] == {} and no_change["guests"] == []

    text = guestcpu("define", guest, "-o", tmp_path / "again.json", cache_home=cache_home).stdout
    assert text.startswith("pinned web01 -> ") and pin["fingerprint"] in text
    assert json.loads((tmp_path / "again.json").read_text()) == pin  # same definition, same pin


def test_diff_of_two_pins_in_text(tmp_path: Path, cache_home: Path) -> None:
    guest = tmp_path / "web01.xml"
    guest.write_text(WEB01)
    guestcpu("define", guest, "-o", tmp_path / "old.json", cache_home=cache_home)
    guest.write_text(WEB01.replace("Haswell-noTSX", "Haswell-noTSX-IBRS"))
    guestcpu("define", guest, "-o", tmp_path / "new.json", cache_home=cache_home)
    out = guestcpu("diff", tmp_path / "old.json", tmp_path / "new.json", cache_home=cache_home).stdout
    assert out.startswith("ABI differs: sha256:")
    assert "  model: 'Haswell-v2' -> 'Haswell-v4'" in out and "  version: 2 -> 4" in out
    assert "features now required: " in out and "spec-ctrl" in out


def test_machine_types_mapping(cache_home: Path) -> None:
    data = as_json("model", "Skylake-Client", "--machine-types", cache_home=cache_home)
    rows = {row["rule"]: row for row in data["machine_types"]}
    assert rows["legacy"]["resolves_to"] == "Skylake-Client (legacy)" and "pc-i440fx-4.0" in rows["legacy"]["machines"]
    assert rows["v1"]["resolves_to"] == "Skylake-Client-v1" and "pc-q35-7.2" in rows["v1"]["machines"]
    assert rows["latest"]["resolves_to"] == "Skylake-Client-v4" and rows["latest"]["machines"] == ["microvm"]
    assert rows["new definition"]["resolves_to"] == "Skylake-Client-v4"
    fixed = as_json("model", "Skylake-Client-IBRS", "--machine-types", cache_home=cache_home)
    assert [(r["rule"], r["resolves_to"]) for r in fixed["machine_types"]] == [("fixed", "Skylake-Client-v2")]


# -- a host update, and which guests it breaks ---------------------------------------------------


def corpus_host(cpu: str) -> dict[str, Any]:
    props: dict[str, Any] = split_replies((CPUTESTDATA / f"x86_64-cpuid-{cpu}.json").read_text(), cpu)[0][
        "return"]["model"]["props"]
    return props


@needs_kvm
def test_microcode_update_that_removes_tsx(tmp_path: Path, cache_home: Path) -> None:
    """Before/after captures of an i7-8700 host whose microcode update removes TSX (hle, rtm)."""
    real = capture_from_document(json.loads(guestcpu("capture", "-o", "-", cache_home=cache_home).stdout))
    kvm = load_caps(QEMU, "kvm", cache_dir=cache_home / "guestcpu").caps
    host = corpus_host("Core-i7-8700")
    before = HostCapture("i7-8700", "6.1", "before", QEMU or "", "7.2.22",
                         {"kvm": caps_on_other_cpu(kvm, host), "tcg": real.accels["tcg"]})
    after = HostCapture("i7-8700", "6.1", "after", QEMU or "", "7.2.22",
                        {"kvm": caps_on_other_cpu(kvm, {**host, "hle": False, "rtm": False}),
                         "tcg": real.accels["tcg"]})
    old, new = tmp_path / "before.json", tmp_path / "after.json"
    old.write_text(json.dumps(capture_to_document(before)))
    new.write_text(json.dumps(capture_to_document(after)))
    pins = tmp_path / "pins"
    pins.mkdir()
    for name, xml in (("tsx-guest", "<domain type='kvm'><cpu><model>Skylake-Client-v1</model></cpu></domain>"),
                      ("notsx-guest", "<domain type='kvm'><cpu><model>Skylake-Client-v4</model></cpu></domain>"),
                      ("tcg-guest", WEB01)):
        (tmp_path / f"{name}.xml").write_text(xml)
        guestcpu("define", tmp_path / f"{name}.xml", "-o", pins / f"{name}.json", cache_home=cache_home)
    (pins / "notes.json").write_text("{}")  # not a pin: ignored

    result = as_json("diff", old, new, "--pins", pins, cache_home=cache_home)
    kvm_change = result["accels"]["kvm"]
    assert kvm_change["features_vanished"] == ["hle", "rtm"] and kvm_change["features_appeared"] == []
    assert kvm_change["models_became_unusable"]["Skylake-Client-v1"] == ["hle", "rtm"]
    assert "Skylake-Client-v4" not in kvm_change["models_became_unusable"]
    assert result["accels"]["tcg"]["models_became_unusable"] == {}
    assert result["guests_broken"] == ["tsx-guest"]
    broken = next(g for g in result["guests"] if g["guest"] == "tsx-guest")
    assert broken["no_longer"] == ["start", "migrate", "restore"]
    assert broken["verdicts"]["migrate"]["reasons_after"] == ["missing features: hle, rtm"]

    text = guestcpu("diff", old, new, "--pins", pins, cache_home=cache_home).stdout
    assert "  models no longer usable: " in text and "Skylake-Client-v1 (blocked by hle, rtm)" in text
    assert "  features vanished: hle, rtm" in text
    assert "guests that would no longer start or migrate:\n  tsx-guest (sha256:" in text
    assert "no longer start, migrate, restore: missing features: hle, rtm" in text

    # The same guest checked against the capture after the update: refused, exit 2, naming the features.
    refused = as_json("migrate-check", pins / "tsx-guest.json", "--to", new, cache_home=cache_home, code=2)
    assert refused["missing_features"] == ["hle", "rtm"] and not refused["ok"]
    text = guestcpu("migrate-check", pins / "tsx-guest.json", "--to", new, cache_home=cache_home, code=2).stdout
    assert "refused before anything was sent: missing features: hle, rtm" in text


@needs_kvm
def test_restore_check_on_this_host_under_kvm_refuses_a_blocked_model(tmp_path: Path, cache_home: Path) -> None:
    guest = tmp_path / "g.xml"
    guest.write_text("<domain type='kvm'><cpu><model>Skylake-Client-v4</model></cpu></domain>")
    guestcpu("define", guest, "-o", tmp_path / "g.json", cache_home=cache_home)
    done = guestcpu("restore-check", tmp_path / "g.json", "--qemu", QEMU or "", cache_home=cache_home, code=2)
    assert done.stdout.startswith("restore to this host's /usr/bin/qemu-system-x86_64 refused before anything was "
                                  "sent: missing features: ")
    assert "pni" in done.stdout


# -- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, cache_home: Path) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("good")
    (where / "web01.xml").write_text(WEB01)
    guestcpu("define", where / "web01.xml", "-o", where / "pin.json", cache_home=cache_home)
    guestcpu("capture", "-o", where / "host.json", cache_home=cache_home)
    return {"pin": where / "pin.json", "host": where / "host.json", "guest": where / "web01.xml"}


def test_hand_edited_pin(good: dict[str, Path], tmp_path: Path, cache_home: Path) -> None:
    doc = json.loads(good["pin"].read_text())
    doc["abi"]["features"]["popcnt"] = "disable"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    for command in (["start", edited, "--verify-only"], ["migrate-check", edited, "--to", good["host"]],
                    ["restore-check", edited], ["diff", edited, good["pin"]]):
        line = one_error_line(guestcpu(*command, cache_home=cache_home, code=1))
        assert "the ABI fingerprint does not match the pinned CPU" in line and "edited by hand" in line


def test_capture_of_another_schema_version(good: dict[str, Path], tmp_path: Path, cache_home: Path) -> None:
    doc = json.loads(good["host"].read_text())
    doc["schema_version"] = 2
    other = tmp_path / "host-v2.json"
    other.write_text(json.dumps(doc))
    line = one_error_line(guestcpu("migrate-check", good["pin"], "--to", other, cache_home=cache_home, code=1))
    assert "has host-capture schema version 2; this guestcpu reads version 1" in line
    caps_doc = tmp_path / "caps.json"
    caps_doc.write_text(json.dumps(doc["accels"]["tcg"]))
    line = one_error_line(guestcpu("migrate-check", good["pin"], "--to", caps_doc, cache_home=cache_home, code=1))
    assert "is not a guestcpu host capture (it is a 'guestcpu/qemu-caps' document)" in line


def test_unknown_machine_type_writes_nothing(good: dict[str, Path], tmp_path: Path, cache_home: Path) -> None:
    out = tmp_path / "pin.json"
    line = one_error_line(guestcpu("define", good["guest"], "--machine", "pc-q35-9.9", "-o", out,
                                   "--libvirt-xml", tmp_path / "cpu.xml", cache_home=cache_home, code=1))
    assert "unknown machine type 'pc-q35-9.9' for QEMU 7.2.22" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["define", "{guest}", "-o", "{tmp}/no/such/dir/pin.json"], "directory {tmp}/no/such/dir does not exist"),
        (["define", "{tmp}/missing.xml", "-o", "{tmp}/pin.json"], "missing.xml: no such file"),
        (["define", "{host}", "-o", "{tmp}/pin.json"], "is not well-formed XML"),
        (["migrate-check", "{pin}", "--to", "{host}", "--qemu", "/usr/bin/qemu-system-x86_64"], "not both"),
        (["migrate-check", "{host}", "--to", "{host}"], "is not a guestcpu pin (it is a 'guestcpu/host-capture'"),
        (["diff", "{pin}", "{host}"], "are not of the same kind"),
        (["diff", "{pin}", "{pin}", "--pins", "{tmp}"], "--pins goes with two captures"),
        (["diff", "{host}", "{host}", "--pins", "{tmp}"], "no pins (*.json written by 'guestcpu define') found"),
        (["diff", "{guest}", "{pin}"], "is not valid JSON"),
        (["start", "{pin}", "--qemu", "{tmp}/no-qemu"], "does not exist; pass an existing --qemu PATH"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    args: list[str], message: str, good: dict[str, Path], tmp_path: Path, cache_home: Path
) -> None:
    values = {"guest": good["guest"], "pin": good["pin"], "host": good["host"], "tmp": tmp_path}
    line = one_error_line(guestcpu(*(a.format(**values) for a in args), cache_home=cache_home, code=1))
    assert message.format(**values) in line
    assert not (tmp_path / "pin.json").exists()


@needs_kvm
def test_a_kvm_pin_where_kvm_is_not_usable(
    tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from guestcpu.cli.main import main

    guest = tmp_path / "g.xml"
    guest.write_text("<domain type='kvm'><cpu><model>pentium-v1</model></cpu></domain>")
    guestcpu("define", guest, "-o", tmp_path / "g.json", cache_home=cache_home)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    for module in ("guestcpu.qemu.probe", "guestcpu.qemu.process", "guestcpu.qemu.cache"):
        monkeypatch.setattr(f"{module}.kvm_unusable_reason", lambda: "/dev/kvm cannot be opened: Permission denied")
    with pytest.raises(SystemExit) as exit_info:
        main(["start", str(tmp_path / "g.json"), "--verify-only"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "guestcpu: error: the pin is for KVM, which is not usable here (/dev/kvm cannot be opened: Permission "
        "denied); a pinned guest runs only under the accelerator it was pinned for")
    with pytest.raises(SystemExit) as exit_info:
        main(["migrate-check", str(tmp_path / "g.json"), "--qemu", QEMU or ""])
    assert exit_info.value.code == 2
    assert "refused before anything was sent: the destination has no usable KVM: /dev/kvm cannot be opened" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("name", ["\x85", "a\u2028b", "\x9b31mred"])
def test_a_name_with_line_breaks_or_terminal_escapes_is_printed_escaped(
    name: str, tmp_path: Path, cache_home: Path
) -> None:
    """A feature name from the guest XML goes into the error as escapes: one line, nothing for the terminal."""
    guest = tmp_path / "g.xml"
    guest.write_text(f"<domain type='qemu'><cpu><model>qemu64</model><feature policy='require' name='{name}'/>"
                     "</cpu></domain>", encoding="utf-8")
    done = guestcpu("compare", guest, "--caps", Path(__file__).parent / "data" / "qemu-7.2" / "caps-tcg.json",
                    cache_home=cache_home, code=1)
    line = one_error_line(done)
    assert "unknown CPU feature" in line and name not in line
    assert name.encode("unicode_escape").decode("ascii") in line


def test_an_escape_sequence_in_an_argument_is_printed_escaped(cache_home: Path) -> None:
    """ESC cannot be in XML; on the command line it can, and the error shows it as \\x1b."""
    line = one_error_line(guestcpu("model", "\x1b[2J\x1b[31mEvil", cache_home=cache_home, code=1))
    assert "\x1b" not in line and "\\x1b[2J\\x1b[31mEvil" in line
