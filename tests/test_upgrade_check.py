"""``guestcpu upgrade-check``: what an upgrade does to this host's pinned guests, checked against real starts.

Guests are pinned on the system QEMU (7.2); the upgrade is QEMU 10.x beside it (``--qemu``),
or a microcode or kernel change given as a new capture (``--to``).  Each prediction is
compared with what really happens when the guest is started on the new side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from guestcpu.lifecycle.capture import capture_from_document, capture_host, capture_to_document, this_microcode
from guestcpu.lifecycle.documents import read_pin
from guestcpu.lifecycle.upgrade import changes_between, upgrade_check
from qemu_support import HASWELL_TCG, QEMU, QEMU10, QEMU10_REASON

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")]

#: name -> (machine type, vCPUs, <cpu> body)
GUESTS = {
    "plain": ("pc-q35-7.2", 1, "<model>qemu64-v1</model>"),
    "haswell": ("pc-q35-7.2", 1, HASWELL_TCG.split(">", 1)[1].rsplit("</cpu>", 1)[0]),
    "threads": ("pc-q35-7.2", 2, "<model>qemu64-v1</model><topology sockets='1' cores='1' threads='2'/>"),
    "old-machine": ("pc-i440fx-1.4", 1, "<model>qemu64-v1</model>"),
    "tcg-cannot": ("pc-q35-7.2", 1, "<model>Skylake-Client-v4</model>"),
}


def cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def pins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    directory = tmp_path_factory.mktemp("pins")
    for name, (machine, vcpus, body) in GUESTS.items():
        xml = home / f"{name}.xml"
        xml.write_text(f"<domain type='qemu'><name>{name}</name><vcpu>{vcpus}</vcpu><os><type arch='x86_64' "
                       f"machine='{machine}'>hvm</type></os><cpu mode='custom' match='exact'>{body}</cpu></domain>")
        made = cli(["define", str(xml), "--accel", "tcg", "-o", str(directory / f"{name}.json")], home)
        assert made.returncode == 0, made.stderr
    return directory


def starts(pin: Path, binary: str | None, home: Path) -> bool:
    args = ["start", str(pin), "--verify-only"] + (["--qemu", binary] if binary else [])
    return cli(args, home).returncode == 0


@pytest.mark.skipif(QEMU10 is None, reason=QEMU10_REASON)
def test_a_7_2_to_10_0_upgrade_names_exactly_the_guests_that_break(pins: Path, tmp_path: Path) -> None:
    assert QEMU10 is not None
    result = cli(["upgrade-check", "--pins", str(pins), "--qemu", QEMU10.x86_64, "--json"], tmp_path)
    report = json.loads(result.stdout)
    assert report["changes"] == ["qemu"]
    by_name = {g["guest"]: g for g in report["guests"]}
    assert set(by_name) == set(GUESTS)
    for name, guest in by_name.items():
        pin = pins / f"{name}.json"
        assert guest["starts_before"] == starts(pin, None, tmp_path), name
        assert guest["start"]["ok"] == starts(pin, QEMU10.x86_64, tmp_path), (name, guest["start"])
        if guest["starts_before"] and not guest["start"]["ok"]:
            assert guest["start"]["reasons"] and name in report["guests_broken"]
    assert "plain" not in report["guests_broken"] and "haswell" not in report["guests_broken"]
    assert by_name["old-machine"]["start"]["reasons"] == ["its QEMU has no machine type pc-i440fx-1.4"]
    assert by_name["old-machine"]["migrate_new_to_old"]["ok"]
    assert by_name["tcg-cannot"]["status"] == "already-broken"
    assert result.returncode == 2
    table = cli(["upgrade-check", "--pins", str(pins), "--qemu", QEMU10.x86_64], tmp_path)
    assert table.returncode == 2 and "old-machine" in table.stdout and "guests break" in table.stdout


def test_captures_record_microcode_and_kernel(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    made = cli(["capture", "-o", str(out)], tmp_path)
    assert made.returncode == 0, made.stderr
    doc = json.loads(out.read_text())
    assert doc["kernel"] == os.uname().release
    assert doc["microcode"] == this_microcode()
    assert capture_from_document(doc).microcode == doc["microcode"]


def _pin_docs(pins: Path) -> list[tuple[str, Any]]:
    return [(p.stem, read_pin(str(p))) for p in sorted(pins.glob("*.json"))]


def test_a_microcode_update_that_removes_a_feature_breaks_the_guests_that_need_it(pins: Path, tmp_path: Path) -> None:
    """Under TCG the host CPU plays no part: a microcode change breaks nobody; the check says which changed."""
    before = capture_host(QEMU, cache_dir=tmp_path)
    after = replace(before, microcode=before.microcode + "-updated")
    assert changes_between(before, after) == ("microcode",)
    report = upgrade_check(_pin_docs(pins), before, after)
    assert report.broken == [] and report.changes == ("microcode",)
    # the same change given as documents, through the CLI
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(capture_to_document(before)))
    new.write_text(json.dumps(capture_to_document(after)))
    result = cli(["upgrade-check", "--pins", str(pins), "--from", str(old), "--to", str(new), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changes"] == ["microcode"]


def test_a_kernel_update_that_drops_what_tcg_gives_breaks_the_guests_naming_the_feature(pins: Path,
                                                                                          tmp_path: Path) -> None:
    before = capture_host(QEMU, cache_dir=tmp_path)
    caps = before.accels["tcg"]
    pin = read_pin(str(pins / "haswell.json"))
    lost = sorted(set(pin.abi.required) & {"sse4.2", "avx2", "fma", "movbe"})[0]
    # what a new kernel with a QEMU that no longer offers ``lost`` would report
    models = tuple(replace(m, blockers=(*m.blockers, lost), usable=False)
                   if m.expansion is not None and lost in m.expansion.enabled else m for m in caps.models)
    host = caps.host_static
    assert host is not None
    weaker = replace(caps, models=models, host_static=replace(host, props={**host.props, lost: False}))
    after = replace(before, kernel=before.kernel + "+1", accels={**before.accels, "tcg": weaker})
    report = upgrade_check(_pin_docs(pins), before, after)
    assert report.changes == ("kernel",)
    assert "haswell" in report.broken
    broken = next(g for g in report.guests if g.name == "haswell")
    assert any(lost in r for r in broken.after["start"].reasons)
    assert broken.after["migrate_new_to_old"].ok  # the old side still has it
