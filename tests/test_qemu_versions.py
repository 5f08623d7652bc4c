"""Every QEMU a fleet runs, offline: real recorded QMP sessions of QEMU 6.2 to 10.0.

The replies are libvirt's ``tests/qemucapabilitiesdata`` (see tests/data/README.md):
real QEMU releases probed under KVM and TCG.  guestcpu's reply parsers must read each
of them, and the catalog's record of which releases define each model version must
agree with what those releases answered.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.formats.qemu_json import NON_FEATURE_PROPS
from guestcpu.model.cpumodel import QemuReleases, release_key
from guestcpu.qemu.caps import QemuCaps, caps_from_replies

ROOT = Path(__file__).parent.parent
REPLIES = Path(__file__).parent / "data" / "qemucapabilitiesdata"
QEMU10 = Path(__file__).parent / "data" / "qemu-10.0" / "x86_models.json"


def _release(path: Path) -> str:
    return json.loads(path.read_text())["qemu"]


def recorded(arch: str) -> list[Path]:
    return sorted(REPLIES.glob(f"caps_*_{arch}.json"), key=lambda p: release_key(_release(p)))


@cache
def session(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def answer(doc: dict[str, Any], accel: str, command: str, **arguments: Any) -> Any:
    for exchange in doc["exchanges"]:
        if exchange["accel"] == accel and exchange["execute"] == command:
            args = exchange.get("arguments", {})
            if all(args.get(k) == v for k, v in arguments.items()):
                return exchange.get("return")
    return None


def caps_of(path: Path, accel: str) -> QemuCaps:
    doc = session(path)
    host = "host" if accel == "kvm" else "max"
    static = {"type": "static", "model": {"name": host}}
    nonmig = {"type": "static", "model": {"name": host, "props": {"migratable": False}}}
    return caps_from_replies(
        arch=doc["arch"], accel=accel, binary=f"qemu-{doc['qemu']}",
        version=answer(doc, "kvm", "query-version"),
        machines=answer(doc, accel, "query-machines"),
        definitions=answer(doc, accel, "query-cpu-definitions"),
        host_static=answer(doc, accel, "query-cpu-model-expansion", **static),
        host_full=None,
        host_static_nonmigratable=answer(doc, accel, "query-cpu-model-expansion", **nonmig),
        model_expansions={},
    )


X86 = recorded("x86_64")
S390X = recorded("s390x")


def test_the_recorded_range_is_6_2_to_10_0() -> None:
    assert _release(X86[0]) == "6.2.0" and _release(X86[-1]) == "10.0.0"
    assert len(X86) >= 11 and len(S390X) >= 5


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
@pytest.mark.parametrize("path", X86 + S390X, ids=lambda p: p.stem)
def test_each_release_parses_into_caps(path: Path, accel: str) -> None:
    doc = session(path)
    caps = caps_of(path, accel)
    major, minor, _ = release_key(doc["qemu"])
    if doc["arch"] == "s390x" and doc["qemu"] == "10.0.0":
        major, minor = 9, 2
    version = answer(doc, "kvm", "query-version")["qemu"]
    # (libvirt's s390x "10.0.0" session is of a 9.2.50 development build)
    assert caps.qemu_version == "{major}.{minor}.{micro}".format(**version)
    assert caps.arch == doc["arch"] and caps.accel == accel
    definitions = answer(doc, accel, "query-cpu-definitions")
    assert [m.name for m in caps.models] == [d["name"] for d in definitions]
    for entry in definitions:
        model = caps.model(entry["name"])
        assert model is not None
        assert model.blockers == tuple(dict.fromkeys(entry.get("unavailable-features", [])))
        assert model.usable == (not entry.get("unavailable-features"))
        assert model.alias_of == entry.get("alias-of")
    # every release has its own newest machine type and a default one
    names = {m.name for m in caps.machines}
    default = caps.default_machine()
    assert default is not None
    if doc["arch"] == "x86_64":
        assert f"pc-q35-{major}.{minor}" in names and f"pc-i440fx-{major}.{minor}" in names
        assert default.alias == "pc" and default.default_cpu == "qemu64"
        assert caps.host_static is not None and caps.host_static.get("vendor") in ("GenuineIntel", "AuthenticAMD")
    else:
        assert f"s390-ccw-virtio-{major}.{minor}" in names
        assert caps.host_static is not None


@pytest.mark.parametrize("path", X86, ids=lambda p: p.stem)
def test_a_versioned_name_resolves_as_that_release_says(path: Path) -> None:
    caps = caps_of(path, "tcg")
    for model in caps.models:
        if model.alias_of is not None:
            assert caps.resolve(model.name)[0] == model.alias_of


# -- the catalog's record of releases ----------------------------------------------------
def _defined() -> dict[str, set[str]]:
    by_release: dict[str, set[str]] = {}
    for path in X86:
        by_release[_release(path)] = {d["name"] for d in answer(session(path), "tcg", "query-cpu-definitions")}
    doc = json.loads(QEMU10.read_text())
    by_release[doc["qemu"]] = set(doc["models"])
    return by_release


#: Versions of a model QEMU removed in 7.1 and libvirt's cpu_map never had (docs/differences.md).
REMOVED_BEFORE_10 = {"Icelake-Client-v1", "Icelake-Client-v2", "Icelake-Client-v3"}


def test_catalog_knows_every_model_any_release_defines(catalog: Catalog) -> None:
    for release, names in _defined().items():
        missing = {n for n in names - {"host", "max", "base"} if not catalog.has_model(n)}
        assert missing <= REMOVED_BEFORE_10, f"QEMU {release} defines {sorted(missing)}"
        if release_key(release) >= (7, 1, 0):
            assert not missing


def test_catalog_records_which_releases_define_each_model(catalog: Catalog) -> None:
    defined = _defined()
    checked = 0
    for model in catalog.models:
        for release, names in defined.items():
            if release == "10.0.0" and model.name in defined["10.0.2"] - names:
                continue  # a stable update added it (YongFeng-v2), below
            assert model.defined_by_qemu(release) == (model.name in names), (model.name, release, model.qemu)
            checked += 1
    assert checked > 1500
    assert catalog.model("Icelake-Client").qemu == QemuReleases("6.2", "7.0")
    assert catalog.model("SapphireRapids-v1").qemu == QemuReleases("8.0")
    assert catalog.model("YongFeng-v1").qemu == QemuReleases("10.0")
    # Debian's 10.0.2 defines YongFeng-v2; libvirt's 10.0.0 session does not
    assert catalog.model("YongFeng-v2").defined_by_qemu("10.0.2")
    assert not catalog.model("YongFeng-v2").defined_by_qemu("10.0.0")


def test_models_only_qemu_defines_come_from_its_definition(catalog: Catalog) -> None:
    doc = json.loads(QEMU10.read_text())["models"]
    for name in ("YongFeng-v1", "SierraForest-v2", "ClearwaterForest-v1"):
        model, qemu = catalog.model(name), doc[name]
        assert model.identity is not None
        assert (model.identity.vendor, model.identity.family, model.identity.model, model.identity.model_id) == (
            qemu["vendor"], qemu["family"], qemu["model"], qemu["model-id"])
        assert set(catalog.names(model.features)) == {catalog.feature(f).name for f in qemu["features"]}
        # never a decode answer: those stay libvirt's
        assert not model.decode_host and not model.decode_guest
    assert catalog.model("YongFeng").alias_of == "YongFeng-v1"
    assert catalog.model("YongFeng-v1").vendor == "Zhaoxin"


def test_every_feature_qemu_10_models_name_is_a_catalog_feature(catalog: Catalog) -> None:
    doc = json.loads(QEMU10.read_text())["models"]
    named = {f for m in doc.values() for f in m["features"]} - NON_FEATURE_PROPS
    assert named and not sorted(f for f in named if not catalog.has_feature(f))
    for name in ("ace2", "phe", "phe-en", "pmm", "pmm-en", "xstore", "xcrypt"):
        assert catalog.feature(name).leaf == 0xC0000001


def test_the_catalog_regenerates_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_catalog.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    data = ROOT / "src" / "guestcpu" / "catalog" / "data"
    for path in [tmp_path / "features.json", tmp_path / "vendors.json", *sorted((tmp_path / "models").iterdir())]:
        committed = data / path.relative_to(tmp_path)
        assert filecmp.cmp(path, committed, shallow=False), committed
    assert len(list((tmp_path / "models").iterdir())) == len(list((data / "models").glob("*.json")))


@pytest.mark.parametrize(("text", "ok"), [("10.0", True), ("10.0.2", True), ("7", False), ("x.y", False)])
def test_release_grammar(text: str, ok: bool) -> None:
    if ok:
        assert release_key(text) >= (7, 0, 0)
    else:
        with pytest.raises(ValueError, match="not a QEMU release"):
            release_key(text)
