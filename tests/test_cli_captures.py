"""A ``guestcpu capture`` document works wherever a host CPU is expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from guestcpu.cli.main import cli
from guestcpu.formats.libvirt_xml import format_cpudata, parse_cpudata

CPUTESTDATA = Path(__file__).parent / "data" / "libvirt-11.3" / "cputestdata"


def capture_of(tmp_path: Path, dump: str) -> Path:
    """A capture document carrying a real CPU's CPUID (as 'guestcpu capture' writes it)."""
    data = parse_cpudata((CPUTESTDATA / f"x86_64-cpuid-{dump}.xml").read_bytes(), dump)
    doc = {
        "schema": "guestcpu/host-capture", "schema_version": 1, "hostname": dump, "kernel": "6.1",
        "captured_at": "2026-11-25T00:00:00Z", "qemu": {"binary": "qemu-system-x86_64", "version": "7.2.22"},
        "cpu": {}, "cpuid": format_cpudata(data), "cpuid_error": None, "accels": {}, "unavailable": {},
    }
    path = tmp_path / f"{dump}.json"
    path.write_text(json.dumps(doc))
    return path


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False, standalone_mode=False)
    return result.exit_code or 0, result.output


def test_host_decodes_the_cpuid_of_a_capture(tmp_path: Path) -> None:
    capture = capture_of(tmp_path, "Core-i7-8700")
    expected = (CPUTESTDATA / "x86_64-cpuid-Core-i7-8700-host.xml").read_text()
    _, out = run(["host", "--cpuid", str(capture)])
    assert out.strip() == expected.strip()


def test_compare_and_baseline_take_captures(tmp_path: Path) -> None:
    a = capture_of(tmp_path, "Core-i7-8700")
    b = capture_of(tmp_path, "Xeon-Gold-6148")
    guest = tmp_path / "g.xml"
    guest.write_text("<cpu mode='custom' match='exact'><model>Skylake-Client-IBRS</model></cpu>")
    _, out = run(["compare", "--json", str(a), str(guest)])
    assert json.loads(out)["result"] == "superset"
    _, out = run(["baseline", "--json", str(a), str(b)])
    assert json.loads(out)["model"].startswith("Skylake-")


def test_json_that_is_not_a_capture_is_refused(tmp_path: Path) -> None:
    from guestcpu.errors import InputError

    other = tmp_path / "pin.json"
    other.write_text(json.dumps({"schema": "guestcpu/pin"}))
    with pytest.raises(InputError, match="not a 'guestcpu capture' document"):
        run(["host", "--cpuid", str(other)])
    empty = tmp_path / "nocpuid.json"
    doc = json.loads(capture_of(tmp_path, "Core-i7-8700").read_text())
    doc.update(cpuid=None, cpuid_error="no /dev/cpu/0/cpuid")
    empty.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"no host CPUID \(no /dev/cpu/0/cpuid\)"):
        run(["compare", str(empty), str(empty)])


def test_host_flavour_points_to_a_better_guest_decode() -> None:
    """libvirt's host decode of the i7-4510U is Westmere with 40 extras; say what the guest flavour finds."""
    import json as _json

    _, out = run(["host", "--json", "--cpuid", str(CPUTESTDATA / "x86_64-cpuid-Core-i7-4510U.xml")])
    data = _json.loads(out)
    assert data["model"] == "Westmere-v1"
    assert "Haswell-noTSX with x2apic disabled" in data["guest_flavour_hint"]
    _, out = run(["host", "--json", "--cpuid", str(CPUTESTDATA / "x86_64-cpuid-Core-i7-8700.xml")])
    assert "guest_flavour_hint" not in _json.loads(out)
