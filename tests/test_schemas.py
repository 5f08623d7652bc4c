"""Every document guestcpu writes validates against the JSON Schema it ships, and
broken documents do not: pins and captures made here by the real commands, and the
capabilities documents recorded from this machine's QEMU."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from guestcpu.schemas import NAMES, schema

DATA = Path(__file__).parent / "data"
QEMU = shutil.which("qemu-system-x86_64")


def validator(name: str) -> Draft202012Validator:
    registry: Registry = Registry().with_resources(
        (schema(n)["$id"], Resource.from_contents(schema(n))) for n in NAMES
    )
    return Draft202012Validator(schema(name), registry=registry)


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_json_schemas(name: str) -> None:
    Draft202012Validator.check_schema(schema(name))


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_recorded_capabilities_documents_validate(accel: str) -> None:
    doc = json.loads((DATA / "qemu-7.2" / f"caps-{accel}.json").read_text())
    validator("qemu-caps").validate(doc)
    broken = copy.deepcopy(doc)
    broken["accel"] = "hvf"
    with pytest.raises(ValidationError):
        validator("qemu-caps").validate(broken)


def guestcpu(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    work = tmp_path_factory.mktemp("docs")
    guest = work / "guest.xml"
    guest.write_text("<domain type='qemu'><os><type machine='q35'>hvm</type></os>"
                     "<cpu mode='custom' match='exact'><model>Westmere</model>"
                     "<topology sockets='1' cores='2' threads='1'/></cpu></domain>")
    for args in (["define", str(guest), "-o", str(work / "pin.json")], ["capture", "-o", str(work / "host.json")],
                 ["schema", "pin"]):
        out = guestcpu(args, work)
        assert out.returncode == 0, out.stderr
    return {
        "pin": json.loads((work / "pin.json").read_text()),
        "host-capture": json.loads((work / "host.json").read_text()),
        "printed-pin-schema": json.loads(guestcpu(["schema", "pin"], work).stdout),
    }


def test_a_real_pin_validates_and_a_broken_one_does_not(documents: dict[str, Any]) -> None:
    pin = documents["pin"]
    validator("pin").validate(pin)
    for break_it in (
        lambda d: d["abi"]["features"].update({"avx2": "optional"}),
        lambda d: d["abi"].pop("machine"),
        lambda d: d.update({"fingerprint": "md5:1234"}),
        lambda d: d["abi"]["topology"].update({"cores": 0}),
    ):
        broken = copy.deepcopy(pin)
        break_it(broken)
        with pytest.raises(ValidationError):
            validator("pin").validate(broken)


def test_a_real_capture_validates(documents: dict[str, Any]) -> None:
    capture = documents["host-capture"]
    validator("host-capture").validate(capture)
    assert set(capture["accels"]) <= {"kvm", "tcg"} and capture["accels"]
    broken = copy.deepcopy(capture)
    broken["accels"]["tcg"] = {"schema": "guestcpu/qemu-caps", "schema_version": 2}
    with pytest.raises(ValidationError):
        validator("host-capture").validate(broken)


def test_schema_command_prints_the_shipped_schema(documents: dict[str, Any]) -> None:
    assert documents["printed-pin-schema"] == schema("pin")
