"""A model the catalog does not know but the QEMU at hand defines works end to end, from QEMU's definition.

The catalog here is libvirt 11.3's cpu_map (``--catalog-libvirt``), without Conroe for
the system QEMU (Conroe is a model TCG can run), and as it is for QEMU 10 (it lacks
YongFeng, ClearwaterForest and SierraForest-v2, and Zhaoxin's ace2/phe/pmm).  Every
command answers from QEMU's own definition with one note that the catalog lacks the
model; none says "unknown" or suggests an unrelated model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guestcpu.catalog.loader import load_catalog
from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.defined import qemu_only_models, with_qemu_models
from qemu_support import QEMU, QEMU10, QEMU10_REASON

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")]

CPU_MAP = Path(__file__).parent / "data" / "libvirt-11.3" / "cpu_map"


@pytest.fixture(scope="module")
def no_conroe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libvirt 11.3's cpu_map without its Conroe files."""
    directory = tmp_path_factory.mktemp("cpu_map") / "cpu_map"
    shutil.copytree(CPU_MAP, directory)
    for path in directory.glob("x86_Conroe*.xml"):
        path.unlink()
    index = directory / "index.xml"
    index.write_text("".join(line for line in index.read_text().splitlines(keepends=True) if "x86_Conroe" not in line))
    return directory


def cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def never_unknown(result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert "unknown CPU model" not in text and "did you mean" not in text, text


def test_a_model_the_catalog_lacks_works_end_to_end(no_conroe: Path, tmp_path: Path) -> None:
    base = ["--catalog-libvirt", str(no_conroe)]
    cpu = tmp_path / "cpu.xml"
    cpu.write_text("<cpu mode='custom' match='exact'><model>Conroe</model></cpu>")
    domain = tmp_path / "guest.xml"
    domain.write_text("<domain type='qemu'><name>conroe</name><os><type arch='x86_64' machine='pc-q35-7.2'>hvm"
                      "</type></os><cpu mode='custom' match='exact'><model>Conroe</model></cpu></domain>")
    lacks = "the catalog lacks Conroe"

    compared = cli([*base, "compare", "--hypervisor", str(cpu), "--accel", "tcg", "--json"], tmp_path)
    assert compared.returncode == 0, compared.stderr
    data = json.loads(compared.stdout)
    assert data["result"] in ("identical", "superset") and data["qemu_model"] == "Conroe-v1"
    assert sum(lacks in n for n in data["notes"]) == 1

    based = cli([*base, "baseline", "--hypervisor", "--accel", "tcg", str(cpu), "--json"], tmp_path)
    assert based.returncode == 0, based.stderr
    assert any("the catalog lacks Conroe" in n for n in json.loads(based.stdout)["notes"])

    ran = cli([*base, "run", str(domain), "--accel", "tcg", "--verify-only"], tmp_path)
    assert ran.returncode == 0 and "verified" in ran.stdout, ran.stderr
    pin = tmp_path / "conroe.pin.json"
    defined = cli([*base, "define", str(domain), "--accel", "tcg", "-o", str(pin)], tmp_path)
    assert defined.returncode == 0, defined.stderr
    assert json.loads(pin.read_text())["abi"]["model"] == "Conroe-v1"
    started = cli([*base, "start", str(pin), "--verify-only"], tmp_path)
    assert started.returncode == 0 and "exactly the pin" in started.stdout, started.stderr
    checked = cli([*base, "migrate-check", str(pin)], tmp_path)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    for result in (compared, based, ran, defined, started, checked):
        never_unknown(result)
    # the same catalog never suggests a did-you-mean for it either
    assert "Conroe" not in "".join(m.name for m in load_catalog(libvirt_dir=no_conroe, dropin_dirs=[]).models)


def test_qemu_definition_becomes_the_model(no_conroe: Path, tmp_path: Path) -> None:
    assert QEMU is not None
    catalog = load_catalog(libvirt_dir=no_conroe, dropin_dirs=[])
    caps = load_caps(QEMU, "tcg", cache_dir=tmp_path).caps
    assert set(qemu_only_models(caps, catalog)) == {"Conroe", "Conroe-v1"}
    wider = with_qemu_models(catalog, caps)
    model, qemu = wider.model("Conroe-v1"), caps.model("Conroe-v1")
    assert qemu is not None and qemu.expansion is not None
    assert set(wider.names(model.features)) == {wider.feature(f).name for f in qemu.expansion.enabled
                                                if wider.has_feature(f)}
    assert model.vendor == "Intel" and not model.decode_host and "not by the catalog" in model.notes
    assert wider.model("Conroe").alias_of == "Conroe-v1"
    assert with_qemu_models(wider, caps) is wider  # nothing left to add


@pytest.mark.skipif(QEMU10 is None, reason=QEMU10_REASON)
@pytest.mark.parametrize("model", ["YongFeng", "ClearwaterForest", "SierraForest-v2"])
def test_qemu_10_models_libvirts_cpu_map_lacks_are_judged_by_qemu(model: str, tmp_path: Path) -> None:
    """Every blocker QEMU names, Zhaoxin's ace2/phe/pmm included, is named; none vanishes."""
    assert QEMU10 is not None
    caps = load_caps(QEMU10.x86_64, "tcg", cache_dir=tmp_path).caps
    cpu = tmp_path / "cpu.xml"
    cpu.write_text(f"<cpu mode='custom' match='exact'><model>{model}</model></cpu>")
    result = cli(["--catalog-libvirt", str(CPU_MAP), "compare", "--hypervisor", str(cpu), "--accel", "tcg",
                  "--qemu", QEMU10.x86_64, "--json"], tmp_path)
    never_unknown(result)
    data = json.loads(result.stdout)
    name = data["qemu_model"]
    entry = caps.model(name)
    assert entry is not None and name.startswith(model.split("-v")[0] + "-v")
    assert data["result"] == ("incompatible" if entry.blockers else "superset")
    named = set(data["missing_features"]) | set(data["uncatalogued_blockers"])
    catalog = load_catalog(libvirt_dir=CPU_MAP, dropin_dirs=[])
    assert {catalog.feature(b).name if catalog.has_feature(b) else b for b in entry.blockers} <= named
    assert any(f"the catalog lacks {model}" in n for n in data["notes"])
    if model == "YongFeng":
        assert {"ace2", "phe", "pmm"} <= set(data["uncatalogued_blockers"])
