"""One parser per QMP reply: real QEMU 7.2 replies parse into checked values, and a
reply of the wrong shape is one ReplyError naming the command and the field, never a
KeyError or TypeError further on (random mutations of the real replies included)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guestcpu.formats import qmp_replies as r
from guestcpu.model.names import base_of, split_version, version_of
from json_paths import paths

DATA = Path(__file__).parent / "data" / "qemu-7.2"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


GUEST = load("guest-kvm-pc-Skylake-Client-v4.json")


def test_version() -> None:
    version = r.parse_version(load("query-version-tcg.json"))
    assert (version.major, version.minor, version.micro, version.text) == (7, 2, 22, "7.2.22")
    assert version.package.startswith("Debian")


def test_machines() -> None:
    machines = r.parse_machines(load("query-machines-tcg.json"))
    names = {m.name for m in machines}
    assert {"pc-i440fx-2.12", "pc-q35-5.2"} <= names
    default = [m for m in machines if m.is_default]
    assert len(default) == 1 and default[0].alias == "pc"
    assert all(m.default_cpu_type is None or m.default_cpu_type.endswith("-cpu") for m in machines)


def test_definitions_dedupe_blockers_and_read_every_member() -> None:
    raw = load("query-cpu-definitions-kvm.json")["return"]
    definitions = r.parse_definitions(raw)
    assert len(definitions) == len(raw)
    by_name = {d.name: d for d in definitions}
    assert by_name["Skylake-Client"].alias_of == "Skylake-Client-v1"
    assert by_name["Skylake-Client-v4"].typename == "Skylake-Client-v4-x86_64-cpu"
    for entry, parsed in zip(raw, definitions, strict=True):
        assert list(parsed.unavailable) == list(dict.fromkeys(entry["unavailable-features"]))
        assert parsed.usable == (not entry["unavailable-features"])
        assert parsed.static is entry["static"] and parsed.deprecated is entry["deprecated"]


@pytest.mark.parametrize("path", sorted(DATA.glob("expansion-*.json")), ids=lambda p: p.name)
def test_expansions(path: Path) -> None:
    raw = json.loads(path.read_text())
    model = r.parse_expansion(raw)
    assert model.name == raw["return"]["model"]["name"]
    assert dict(model.props) == raw["return"]["model"]["props"]
    with pytest.raises(TypeError):
        model.props["cmov"] = False  # type: ignore[index]  # immutable


def test_vcpus_properties_and_qom_values_of_a_live_guest() -> None:
    (cpu,) = r.parse_cpus_fast(GUEST["query-cpus-fast"])
    assert (cpu.cpu_index, cpu.qom_path, cpu.target) == (0, "/machine/unattached/device[0]", "x86_64")
    props = r.parse_properties(GUEST["qom-list-cpu"], "qom-list")
    assert {"realized", "feature-words", "vendor"} <= {p.name for p in props}
    words = r.qom_feature_words(GUEST["qom-get feature-words"], "feature-words")
    assert any(w.eax == 1 and w.register == "EDX" and w.features for w in words)
    assert r.qom_str(GUEST["qom-get vendor"], "vendor") == "AuthenticAMD"
    assert r.qom_int(GUEST["qom-get family"], "family") == 6
    assert r.qom_bool(GUEST["qom-get check"], "check") is True
    assert "aes" in r.qom_names(GUEST["qom-get unavailable-features"], "unavailable-features")


def test_s390x_comparisons_and_baselines() -> None:
    for case in load("s390x/comparisons.json"):
        if "error" in case["reply"]:
            continue
        found = r.parse_comparison(case["reply"])
        assert found.result == case["reply"]["return"]["result"]
    for case in load("s390x/baselines.json"):
        if "error" in case["reply"]:
            continue
        model = r.parse_baseline(case["reply"])
        assert model.name.endswith("-base")


def test_target_status_and_migration() -> None:
    assert r.parse_target({"arch": "s390x"}) == "s390x"
    assert r.parse_status({"status": "inmigrate", "running": False}) == "inmigrate"
    info = r.parse_migration({"status": "completed", "downtime": 3, "total-time": 40, "ram": {"transferred": 9}})
    assert (info.status, info.downtime_ms, info.total_ms, info.transferred_bytes) == ("completed", 3, 40, 9)


# -- wrong shapes: one error naming the command and the field ---------------------------------


@pytest.mark.parametrize(
    ("parse", "reply", "message"),
    [
        (r.parse_expansion, {"return": "x"}, "query-cpu-model-expansion reply is malformed: expected an object, "
                                             "found the string 'x'"),
        (r.parse_expansion, {"model": []}, "query-cpu-model-expansion reply is malformed at model: expected an object"),
        (r.parse_expansion, {"model": {"props": {}}}, "at model.name: expected a string, found nothing"),
        (r.parse_expansion, {"model": {"name": "x", "props": {"aes": [1]}}}, "at model.props.aes: expected a boolean"),
        (r.parse_cpus_fast, [{"cpu-index": 0}], "query-cpus-fast reply is malformed at [0].qom-path"),
        (r.parse_cpus_fast, {"qom-path": "/x"}, "query-cpus-fast reply is malformed: expected a list"),
        (r.parse_definitions, [{"name": "a", "unavailable-features": "aes"}],
         "query-cpu-definitions reply is malformed at [0].unavailable-features: expected a list"),
        (r.parse_definitions, [{"name": "a", "unavailable-features": [1]}], "at [0].unavailable-features[0]"),
        (r.parse_definitions, [{"name": 5}], "at [0].name: expected a string, found the number 5"),
        (r.parse_definitions, [{"name": "a", "static": "yes"}], "at [0].static: expected true or false"),
        (r.parse_machines, [{"name": "pc", "cpu-max": "many"}], "query-machines reply is malformed at [0].cpu-max"),
        (r.parse_version, {"qemu": {"major": 7, "minor": 2}}, "query-version reply is malformed at qemu.micro"),
        (r.parse_comparison, {"result": "better"}, "query-cpu-model-comparison reply is malformed at result"),
        (lambda x: r.qom_feature_words(x, "feature-words"), [{"cpuid-register": "EZX"}],
         "qom-get feature-words reply is malformed at [0].cpuid-register"),
        (lambda x: r.qom_bool(x, "aes"), None, "qom-get aes reply is malformed: expected true or false, found null"),
        (r.parse_properties, [{"name": "x"}], "qom-list-properties reply is malformed at [0].type"),
        (r.parse_migration, {"status": "active", "ram": 5}, "query-migrate reply is malformed at ram"),
    ],
)
def test_wrong_shapes_name_the_command_and_field(parse: Callable[[Any], Any], reply: Any, message: str) -> None:
    with pytest.raises(r.ReplyError, match=re.escape(message)):
        parse(reply)


# -- random damage to the real replies ---------------------------------------------------------

WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**40), st.text(max_size=5), st.just([]), st.just({}),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def mutate(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    doc = copy.deepcopy(value)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


CASES: list[tuple[str, Callable[[Any], Any], Any]] = [
    ("version", r.parse_version, load("query-version-tcg.json")),
    ("machines", r.parse_machines, load("query-machines-tcg.json")["return"][:4]),
    ("definitions", r.parse_definitions, load("query-cpu-definitions-tcg.json")["return"][:4]),
    ("expansion", r.parse_expansion, load("expansion-tcg-static-qemu64.json")),
    ("cpus-fast", r.parse_cpus_fast, GUEST["query-cpus-fast"]),
    ("feature-words", lambda x: r.qom_feature_words(x, "feature-words"), GUEST["qom-get feature-words"][:4]),
    ("properties", r.parse_properties, GUEST["qom-list-cpu"][:4]),
    ("comparison", r.parse_comparison, load("s390x/comparisons.json")[0]["reply"]),
    ("baseline", r.parse_baseline, load("s390x/baselines.json")[0]["reply"]),
]


@pytest.mark.parametrize(("name", "parse", "reply"), CASES, ids=[c[0] for c in CASES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_replies_parse_or_fail_clearly(
    name: str, parse: Callable[[Any], Any], reply: Any, data: st.DataObject
) -> None:
    where = data.draw(st.sampled_from(paths(reply, per_list=3)))
    delete = bool(where) and data.draw(st.booleans())
    damaged = mutate(reply, where, data.draw(WEIRD), delete)
    try:
        parse(damaged)
    except r.ReplyError as exc:
        assert str(exc).startswith("QEMU's ") and "reply is malformed" in str(exc)


def test_the_model_version_grammar_is_defined_once() -> None:
    assert split_version("Skylake-Client-v4") == ("Skylake-Client", 4)
    assert split_version("Skylake-Client-noTSX-IBRS") == ("Skylake-Client-noTSX-IBRS", None)
    assert version_of("EPYC-v10") == 10 and base_of("EPYC-v10") == "EPYC" and version_of("v4") is None
    sources = [p for p in (Path(__file__).parent.parent / "src" / "guestcpu").rglob("*.py")
               if re.search(r"-v\(\?P<version>|-v\(\\d", p.read_text())]
    assert [p.name for p in sources] == ["names.py"]


def test_a_probe_with_a_malformed_reply_is_one_error() -> None:
    from guestcpu.qemu.caps import caps_from_replies

    good: dict[str, Any] = {
        "version": load("query-version-tcg.json"), "machines": load("query-machines-tcg.json")["return"],
        "definitions": load("query-cpu-definitions-tcg.json")["return"],
        "host_static": load("expansion-tcg-static-max.json")["return"], "host_full": None,
        "host_static_nonmigratable": None,
        "model_expansions": {"qemu64": load("expansion-tcg-static-qemu64.json")["return"]},
        "model_properties": {"qemu64-x86_64-cpu": GUEST["qom-list-cpu"]},
    }
    caps = caps_from_replies(arch="x86_64", accel="tcg", binary="qemu", **good)
    assert caps.qemu_version == "7.2.22" and "feature-words" in caps.cpu_properties
    assert caps.model("qemu64") is not None and caps.model("qemu64").expansion is not None  # type: ignore[union-attr]
    for key, bad, where in [("definitions", "x", "query-cpu-definitions reply is malformed: expected a list"),
                            ("machines", [{"name": 1}], "query-machines reply is malformed at [0].name"),
                            ("model_expansions", {"qemu64": {"model": "qemu64"}},
                             "query-cpu-model-expansion reply is malformed at model: expected an object"),
                            ("model_properties", {"t": [{"name": "x", "type": None}]}, "qom-list-properties")]:
        with pytest.raises(r.ReplyError, match=re.escape(where)):
            caps_from_replies(arch="x86_64", accel="tcg", binary="qemu", **{**good, key: bad})
