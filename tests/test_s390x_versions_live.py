"""s390x on every QEMU release the tests have (7.2 and 10.x): model names, compare and
baseline are QEMU's own answers, read here with qemu.qmp's plain client and compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guestcpu.qemu.cache import load_caps
from guestcpu.qemu.s390x import baseline_models, compare_models, parse_model_spec
from qemu_support import QEMU10, QEMU10_REASON, SYSTEM_QEMU, QemuBinaries
from test_qemu_live import raw_qmp

pytestmark = pytest.mark.qemu


def _params() -> list[Any]:
    params: list[Any] = []
    for binaries, reason in ((SYSTEM_QEMU, "the system QEMU is not installed"), (QEMU10, QEMU10_REASON)):
        if binaries is not None and binaries.s390x is not None:
            params.append(pytest.param(binaries, id=f"qemu{binaries.label}"))
        else:
            params.append(pytest.param(None, marks=pytest.mark.skip(reason=f"no qemu-system-s390x: {reason}")))
    return params


@pytest.fixture(scope="module", params=_params())
def s390x(request: pytest.FixtureRequest) -> QemuBinaries:
    binaries: QemuBinaries = request.param
    return binaries


_ARGS = ["-machine", "none,accel=tcg", "-nodefaults", "-display", "none"]


def _definitions(binary: str) -> list[dict[str, Any]]:
    return raw_qmp(binary, _ARGS, [("query-cpu-definitions", {})])[0]["return"]  # type: ignore[no-any-return]


def test_models_come_from_each_qemu_and_are_cached_per_binary(s390x: QemuBinaries, tmp_path: Path) -> None:
    assert s390x.s390x is not None
    first = load_caps(s390x.s390x, "tcg", arch="s390x", cache_dir=tmp_path)
    assert first.status == "missing" and first.caps.qemu_version.startswith(s390x.label)
    raw = _definitions(s390x.s390x)
    assert [m.name for m in first.caps.models] == [e["name"] for e in raw]
    for entry in raw:
        model = first.caps.model(entry["name"])
        assert model is not None and model.usable == (not entry["unavailable-features"]), entry["name"]
    assert load_caps(s390x.s390x, "tcg", arch="s390x", cache_dir=tmp_path).status == "hit"
    # the other release's binary never answers from this one's cache entry
    assert len(list(tmp_path.glob("qemu-*.json"))) == 1


def test_newer_qemu_defines_models_the_older_lacks(tmp_path: Path) -> None:
    if SYSTEM_QEMU is None or SYSTEM_QEMU.s390x is None or QEMU10 is None or QEMU10.s390x is None:
        pytest.skip(f"needs both s390x binaries ({QEMU10_REASON or 'system qemu-system-s390x missing'})")
    old = {m.name for m in load_caps(SYSTEM_QEMU.s390x, "tcg", arch="s390x", cache_dir=tmp_path).caps.models}
    new = {m.name for m in load_caps(QEMU10.s390x, "tcg", arch="s390x", cache_dir=tmp_path).caps.models}
    assert len(list(tmp_path.glob("qemu-*.json"))) == 2
    assert old < new and "gen17a" in new - old


def _pairs(binary: str) -> list[tuple[str, str]]:
    names = [e["name"] for e in _definitions(binary) if e["name"].endswith("-base") and "alias-of" not in e]
    picked = [*names[::max(1, len(names) // 6)], "max"]
    return [*[(a, b) for a in picked for b in picked if a != b][:24], ("z13,vx=off", "z13"), ("z14,+msa8", "z13")]


def test_compare_is_qemus_answer(s390x: QemuBinaries) -> None:
    assert s390x.s390x is not None
    pairs = _pairs(s390x.s390x)
    replies = raw_qmp(s390x.s390x, _ARGS, [
        ("query-cpu-model-comparison", {"modela": parse_model_spec(a).to_qmp(), "modelb": parse_model_spec(b).to_qmp()})
        for a, b in pairs
    ])
    checked = 0
    for (a, b), reply in zip(pairs, replies, strict=True):
        if "error" in reply:
            continue
        ours = compare_models(parse_model_spec(a), parse_model_spec(b), binary=s390x.s390x)
        assert ours.result == reply["return"]["result"], (a, b)
        assert list(ours.responsible_properties) == reply["return"]["responsible-properties"], (a, b)
        checked += 1
    assert checked >= 10


def test_baseline_is_qemus_answer(s390x: QemuBinaries) -> None:
    assert s390x.s390x is not None
    pairs = _pairs(s390x.s390x)[:8]
    replies = raw_qmp(s390x.s390x, _ARGS, [
        ("query-cpu-model-baseline", {"modela": parse_model_spec(a).to_qmp(), "modelb": parse_model_spec(b).to_qmp()})
        for a, b in pairs
    ])
    for (a, b), reply in zip(pairs, replies, strict=True):
        ours = baseline_models([parse_model_spec(a), parse_model_spec(b)], binary=s390x.s390x)
        assert ours.name == reply["return"]["model"]["name"], (a, b)
        assert dict(ours.props) == reply["return"]["model"].get("props", {}), (a, b)
