"""The ``guestcpu`` command line, end to end, on real libvirt data.

Most runs go through ``click.testing.CliRunner`` against ``guestcpu.cli.main.cli``;
a few start ``python -m guestcpu.cli.main`` as a real process to prove exit codes
and that nothing but the answer (or one error line) is printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import guestcpu
from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from guestcpu.cli.main import cli
from guestcpu.engine.compare import CompareResult, compare
from guestcpu.engine.cpubits import compile_cpu
from guestcpu.formats.libvirt_xml import format_cpudata, parse_cpu, parse_cpudata, parse_cpus
from guestcpu.model.cpu import CpuDefinition, CpuType
from guestcpu.model.cpuid import CpuidData

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
XML = DATA / "xml"
MANIFEST = json.loads((DATA / "libvirt-11.3" / "cputest_manifest.json").read_text())["cases"]
#: the 61 real CPUs: every dump libvirt decodes in its cputest
DUMPS = sorted({c["input_cpuid"] for c in MANIFEST if c["arch"] == "x86_64" and c["kind"] == "cpuid_host"})

I7_7700 = CPUTESTDATA / "x86_64-cpuid-Core-i7-7700.xml"
I5_4670T = CPUTESTDATA / "x86_64-cpuid-Core-i5-4670T.xml"
EPYC_7502 = CPUTESTDATA / "x86_64-cpuid-EPYC-7502-32-Core.xml"
CAPS = XML / "capabilities-core-i7-7700.xml"
DOMCAPS = XML / "domcapabilities-core-i7-7700.xml"
DOMAIN = XML / "domain-skylake.xml"
TWO_HOSTS = XML / "two-intel-hosts.xml"


@pytest.fixture(autouse=True)
def isolated_catalog(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No drop-ins from this machine's /etc or ~/.config, no libvirt map from the environment."""
    empty = tmp_path_factory.mktemp("no-dropins")
    monkeypatch.setattr("guestcpu.catalog.paths.SYSTEM_DROPIN_DIR", empty / "etc")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty / "xdg"))
    monkeypatch.delenv("GUESTCPU_CATALOG_LIBVIRT", raising=False)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(dropin_dirs=[])


def run(*args: str | Path, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def run_json(*args: str | Path, code: int = 0) -> Any:
    return json.loads(run(*args, "--json", code=code).stdout)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def verdict(text: str) -> str:
    """The verdict word that starts compare's text output ("superset: ..." or "superset")."""
    return text.splitlines()[0].split(":")[0].strip()


def expected_model(xml_path: Path) -> str:
    match = re.search(r"<model[^>]*>([^<]+)</model>", xml_path.read_text())
    assert match, xml_path
    return match.group(1)


def run_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guestcpu.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


# -- host ------------------------------------------------------------------------------


@pytest.mark.parametrize("dump", DUMPS, ids=lambda d: d.removeprefix("x86_64-cpuid-").removesuffix(".xml"))
def test_host_json_model_matches_libvirt_for_both_flavors(dump: str) -> None:
    for flavor in ("host", "guest"):
        data = run_json("host", "--cpuid", CPUTESTDATA / dump, "--flavor", flavor)
        expected = CPUTESTDATA / dump.replace(".xml", f"-{flavor}.xml")
        assert data["model"] == expected_model(expected), flavor
        assert data["flavor"] == flavor
        # the embedded XML is the same answer
        assert parse_cpu(data["xml"].encode(), "json xml").model == data["model"]
        if flavor == "host":
            assert data["disabled_features"] == []
            assert all("policy" not in f for f in data["features"])
        else:
            assert data["mode"] == "custom" and data["match"] == "exact" and data["fallback"] == "forbid"


@pytest.mark.parametrize(
    "name",
    ["Core-i5-6600", "Core-i7-4510U", "Xeon-Gold-6148", "EPYC-7502-32-Core", "Hygon-C86-7185-32-core",
     "Atom-D510", "Opteron-2350", "Core2-E6850"],
)
@pytest.mark.parametrize("flavor", ["host", "guest"])
def test_host_xml_is_libvirts_expected_file(name: str, flavor: str) -> None:
    out = run("host", "--cpuid", CPUTESTDATA / f"x86_64-cpuid-{name}.xml", "--flavor", flavor).stdout
    expected = (CPUTESTDATA / f"x86_64-cpuid-{name}-{flavor}.xml").read_text()
    assert out.rstrip("\n") == expected.rstrip("\n")


def test_host_default_flavor_is_host() -> None:
    out = run("host", "--cpuid", I7_7700).stdout
    cpu = parse_cpu(out.encode(), "out")
    assert cpu.type is CpuType.HOST
    assert (cpu.model, cpu.vendor, cpu.signature) == ("Skylake-Client-v1", "Intel", (6, 158, 9))


def test_host_json_details() -> None:
    data = run_json("host", "--cpuid", I7_7700)
    assert data["brand"] == "Intel(R) Core(TM) i7-7700 CPU @ 3.60GHz"
    assert data["signature"] == {"family": 6, "model": 158, "stepping": 9}
    assert data["vendor"] == "Intel"
    assert "sgx" in data["required_features"]
    assert [f["name"] for f in data["features"]] == data["required_features"]


def test_host_guest_flavor_disables_features() -> None:
    # libvirt's own example: an i7-4510U lacks one Haswell bit; the guest decode keeps
    # it Haswell-noTSX (not Westmere + 40 extras) and says which feature is disabled.
    dump = CPUTESTDATA / "x86_64-cpuid-Core-i7-4510U.xml"
    data = run_json("host", "--cpuid", dump, "--flavor", "guest")
    assert data["model"] == expected_model(CPUTESTDATA / "x86_64-cpuid-Core-i7-4510U-guest.xml")
    disabled = [f["name"] for f in data["features"] if f.get("policy") == "disable"]
    assert disabled == data["disabled_features"]
    assert disabled


# -- compare ---------------------------------------------------------------------------


def test_compare_identical(tmp_path: Path) -> None:
    guest = CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-guest.xml"
    out = run("compare", I7_7700, guest).stdout
    assert verdict(out) == "identical"
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "identical"
    assert data["missing_features"] == [] and data["extra_features"] == []
    assert set(data) >= {"result", "missing_features", "extra_features", "reason"}
    run("compare", "--error", I7_7700, guest, code=0)


def test_compare_superset_names_extra_features(tmp_path: Path) -> None:
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>Skylake-Client</model><vendor>Intel</vendor></cpu>")
    out = run("compare", I7_7700, guest).stdout
    assert verdict(out) == "superset"
    assert "extra host features:" in out and "sgx" in out and "invtsc" in out
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "superset"
    assert data["missing_features"] == []
    assert {"sgx", "invtsc", "vmx", "xsaves"} <= set(data["extra_features"])
    assert "more" in data["reason"]
    run("compare", "--error", I7_7700, guest, code=0)


def test_compare_incompatible_names_missing_features(tmp_path: Path) -> None:
    guest = write(
        tmp_path / "g.xml",
        "<cpu mode='custom' match='exact'><model>Skylake-Client</model>"
        "<feature policy='require' name='avx512f'/><feature policy='require' name='avx512bw'/></cpu>",
    )
    out = run("compare", I7_7700, guest).stdout
    assert verdict(out) == "incompatible"
    assert "avx512f, avx512bw" in out
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "incompatible"
    assert data["missing_features"] == ["avx512f", "avx512bw"]
    assert "avx512f" in data["reason"]
    result = run("compare", "--error", I7_7700, guest, code=3)
    assert verdict(result.stdout) == "incompatible"
    assert run_json("compare", "--error", I7_7700, guest, code=3)["result"] == "incompatible"


def test_compare_incompatible_model_feature(tmp_path: Path) -> None:
    # Cascadelake needs AVX-512 and more; the deciding features are named
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>Cascadelake-Server</model></cpu>")
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "incompatible"
    assert {"avx512f", "avx512vnni", "avx512cd"} <= set(data["missing_features"])
    assert "sse2" not in data["missing_features"]


def test_compare_forbidden_feature(tmp_path: Path) -> None:
    guest = write(
        tmp_path / "g.xml",
        "<cpu match='exact'><model>Skylake-Client</model><feature policy='forbid' name='vmx'/></cpu>",
    )
    out = run("compare", I7_7700, guest).stdout
    assert verdict(out) == "incompatible"
    assert "vmx" in out
    data = run_json("compare", "--error", I7_7700, guest, code=3)
    assert data["result"] == "incompatible"
    assert data["forbidden_features"] == ["vmx"]
    assert "forbidden" in data["reason"]


def test_compare_strict_match_refuses_extra_features(tmp_path: Path) -> None:
    guest = write(tmp_path / "g.xml", "<cpu match='strict'><model>Skylake-Client</model></cpu>")
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "incompatible"
    assert "sgx" in data["extra_features"]
    assert "strict" in data["reason"]


def test_compare_vendor_mismatch(tmp_path: Path) -> None:
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>EPYC-Rome</model><vendor>AMD</vendor></cpu>")
    data = run_json("compare", I7_7700, guest)
    assert data["result"] == "incompatible"
    assert "AMD" in data["reason"] and "Intel" in data["reason"]


def test_compare_capabilities_host_and_domain_guest() -> None:
    # the domain's Skylake-Client-IBRS needs spec-ctrl, which this host CPU lacks
    data = run_json("compare", CAPS, DOMAIN)
    assert data["result"] == "incompatible"
    assert data["missing_features"] == ["spec-ctrl"]
    # a libvirt host <cpu> works as HOST too
    host = CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-host.xml"
    assert run_json("compare", host, DOMAIN)["missing_features"] == ["spec-ctrl"]


def test_compare_domcapabilities_host_model_as_guest() -> None:
    # host-model as QEMU gives it contains 'hypervisor', which bare metal lacks
    data = run_json("compare", I7_7700, DOMCAPS)
    assert data["result"] == "incompatible"
    assert data["missing_features"] == ["hypervisor"]


def test_compare_error_exits_0_when_compatible_in_a_real_process() -> None:
    proc = run_process("compare", "--error", CAPS, CPUTESTDATA / "x86_64-cpuid-Core-i7-7700-guest.xml")
    assert proc.returncode == 0, proc.stderr
    assert verdict(proc.stdout) == "identical"
    assert proc.stderr == ""


def test_compare_error_exit_3_in_a_real_process(tmp_path: Path) -> None:
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>Icelake-Server</model></cpu>")
    proc = run_process("compare", "--error", I7_7700, guest)
    assert proc.returncode == 3
    assert verdict(proc.stdout) == "incompatible"
    assert "avx512f" in proc.stdout
    assert proc.stderr == ""
    plain = run_process("compare", I7_7700, guest)
    assert plain.returncode == 0
    assert plain.stdout == proc.stdout


# -- baseline --------------------------------------------------------------------------


def test_baseline_of_multi_cpu_file_capabilities_and_dump(catalog: Catalog) -> None:
    out = run("baseline", TWO_HOSTS, CAPS, CPUTESTDATA / "x86_64-cpuid-Core-i7-8700.xml").stdout
    result = parse_cpu(out.encode(), "baseline")
    assert result.type is CpuType.GUEST
    assert result.model == "Haswell-noTSX"  # the i5-4670T (Haswell) decides
    assert result.vendor == "Intel"
    # every input can run it
    inputs = [*parse_cpus(TWO_HOSTS.read_bytes(), "two"), *parse_cpus(CAPS.read_bytes(), "caps")]
    for host in inputs:
        assert compare(host, result, catalog).result is not CompareResult.INCOMPATIBLE
    data = run_json("baseline", TWO_HOSTS, CAPS, CPUTESTDATA / "x86_64-cpuid-Core-i7-8700.xml")
    assert data["inputs"] == 4
    assert data["model"] == "Haswell-noTSX"
    assert "sgx" in data["dropped_features"]  # the Skylakes have it, the Haswell does not
    assert data["xml"] == out


def test_baseline_of_one_dump_is_its_guest_decode() -> None:
    out = run("baseline", I7_7700).stdout
    cpu = parse_cpu(out.encode(), "b")
    assert cpu.model == "Skylake-Client"
    assert {"sgx", "invtsc", "xsaves"} <= {f.name for f in cpu.features}


def test_baseline_features_expands_every_feature(catalog: Catalog) -> None:
    plain = parse_cpu(run("baseline", TWO_HOSTS).stdout.encode(), "plain")
    expanded = parse_cpu(run("baseline", "--features", TWO_HOSTS).stdout.encode(), "expanded")
    assert expanded.model == plain.model == "Haswell-noTSX"
    names = {f.name for f in expanded.features}
    model_features = set(catalog.names(catalog.model("Haswell-noTSX").features))
    assert model_features <= names
    assert {"fpu", "sse2", "avx2", "fma"} <= names
    assert len(expanded.features) > len(plain.features)
    # expanding changes the spelling, not the CPU
    assert catalog.names(_all_bits(expanded, catalog)) == catalog.names(_all_bits(plain, catalog))


def _all_bits(cpu: CpuDefinition, catalog: Catalog) -> int:
    return compile_cpu(cpu, catalog).all


def test_baseline_migratable_drops_invtsc_and_xsaves() -> None:
    plain = {f.name for f in parse_cpu(run("baseline", I7_7700, CAPS).stdout.encode(), "p").features}
    assert {"invtsc", "xsaves"} <= plain
    out = run("baseline", "--migratable", I7_7700, CAPS).stdout
    migratable = {f.name for f in parse_cpu(out.encode(), "m").features}
    assert "invtsc" not in migratable and "xsaves" not in migratable
    assert plain - migratable == {"invtsc", "xsaves"}


def test_baseline_restricted_to_models() -> None:
    out = run("baseline", "--model", "Westmere", "--model", "Nehalem", TWO_HOSTS).stdout
    cpu = parse_cpu(out.encode(), "b")
    assert cpu.model == "Westmere"
    data = run_json("baseline", "--model", "SandyBridge", TWO_HOSTS)
    assert data["model"] == "SandyBridge"
    assert {"avx2", "fma"} <= {f["name"] for f in data["features"]}


def test_baseline_json_keys() -> None:
    data = run_json("baseline", CAPS, I5_4670T)
    assert set(data) >= {"model", "vendor", "features", "inputs", "dropped_features", "xml"}
    assert data["inputs"] == 2
    assert data["mode"] == "custom" and data["match"] == "exact"


# -- models and model ------------------------------------------------------------------


def test_models_vendor_amd_json(catalog: Catalog) -> None:
    data = run_json("models", "--vendor", "AMD")
    names = [m["name"] for m in data["models"]]
    assert {m["vendor"] for m in data["models"]} == {"AMD"}
    assert names == [m.name for m in catalog.models if m.vendor == "AMD"]
    assert {"EPYC-Rome", "EPYC-Rome-v4", "Opteron_G5", "EPYC-Genoa"} <= set(names)
    assert "Skylake-Client" not in names and "Dhyana" not in names
    rome = next(m for m in data["models"] if m["name"] == "EPYC-Rome")
    assert rome["alias_of"] == "EPYC-Rome-v1"
    assert data["catalog"] == "built-in"


def test_models_text_and_all(catalog: Catalog) -> None:
    data = run_json("models")
    assert len(data["models"]) == len(catalog.models) == 156
    out = run("models", "--vendor", "Hygon").stdout
    assert "Dhyana" in out and "EPYC" not in out


@pytest.mark.parametrize("spelling", ["amd", "AMD", "Amd"])
def test_models_vendor_is_case_insensitive(spelling: str) -> None:
    names = {m["name"] for m in run_json("models", "--vendor", spelling)["models"]}
    assert "EPYC-Rome" in names and "Skylake-Client" not in names


def test_model_machine_types_takes_qemu(tmp_path: Path) -> None:
    missing = tmp_path / "no-qemu"
    result = CliRunner().invoke(cli, ["model", "Westmere", "--machine-types", "--qemu", str(missing)])
    assert result.exit_code == 1 and f"QEMU binary {missing} does not exist" in str(result.exception)
    # GUESTCPU_QEMU means the same as --qemu, for the lifecycle commands too
    for args in (["model", "Westmere", "--machine-types"], ["capture", "-o", str(tmp_path / "c.json")]):
        result = CliRunner().invoke(cli, args, env={"GUESTCPU_QEMU": str(missing)})
        assert result.exit_code == 1 and str(missing) in str(result.exception), (args, result.exception)


def test_model_skylake_client_json() -> None:
    data = run_json("model", "Skylake-Client")
    assert data["name"] == "Skylake-Client"
    assert data["alias_of"] == data["canonical"] == "Skylake-Client-v1"
    assert data["versions"] == [f"Skylake-Client-v{i}" for i in (1, 2, 3, 4)]
    assert data["latest_version"] == "Skylake-Client-v4"
    assert data["aliases"] == {
        "Skylake-Client": "Skylake-Client-v1",
        "Skylake-Client-IBRS": "Skylake-Client-v2",
        "Skylake-Client-noTSX-IBRS": "Skylake-Client-v3",
    }
    changes = {(c["from"], c["to"]): c for c in data["version_changes"]}
    v1v2 = changes[("Skylake-Client-v1", "Skylake-Client-v2")]
    assert v1v2["added"] == ["spec-ctrl"] and v1v2["removed"] == []
    v2v3 = changes[("Skylake-Client-v2", "Skylake-Client-v3")]
    assert sorted(v2v3["removed"]) == ["hle", "rtm"] and v2v3["added"] == []
    assert "xsaves" in changes[("Skylake-Client-v3", "Skylake-Client-v4")]["added"]
    assert data["vendor"] == "Intel"
    assert {"family": 6, "model": 94} in data["signatures"]
    assert {"avx2", "hle", "rtm"} <= set(data["features"]) and "spec-ctrl" not in data["features"]
    assert data["removed_features"] == ["mpx"]
    assert data["identity"]["model_id"] == "Intel Core Processor (Skylake)"


def test_model_variant_resolves_to_version() -> None:
    data = run_json("model", "Skylake-Client-IBRS")
    assert data["canonical"] == "Skylake-Client-v2"
    assert "spec-ctrl" in data["features"]
    out = run("model", "Skylake-Client").stdout
    assert out.splitlines()[0] == "Skylake-Client -> Skylake-Client-v1"
    assert "Skylake-Client-v1 -> Skylake-Client-v2: +spec-ctrl" in out
    assert "-hle -rtm" in out


def test_version() -> None:
    out = run("--version").stdout
    assert out.strip() == f"guestcpu, version {guestcpu.__version__}"
    proc = run_process("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == out.strip() and proc.stderr == ""


def test_help_lists_every_command() -> None:
    out = run("--help").stdout
    for command in ("host", "compare", "baseline", "models", "model"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


# -- --catalog-libvirt -----------------------------------------------------------------

TINY_INDEX = """<cpus>
  <arch name='x86'>
    <include filename='x86_vendors.xml'/>
    <include filename='x86_features.xml'/>
    <group name='Tiny test models'>
      <include filename='x86_TinyOld.xml'/>
      <include filename='x86_TinyNew.xml'/>
    </group>
  </arch>
</cpus>
"""
TINY_FILES = {
    "x86_vendors.xml": """<cpus>
  <vendor name='Intel' string='GenuineIntel'/>
  <vendor name='AMD' string='AuthenticAMD'/>
</cpus>
""",
    "x86_features.xml": """<cpus>
  <!-- cpuid level 0x00000001 (ecx) -->
  <feature name='sse4.1'>
    <alias name='sse4_1' source='qemu'/>
    <cpuid eax_in='0x00000001' ecx='0x00080000'/>
  </feature>
  <!-- cpuid level 0x00000001 (edx) -->
  <feature name='fpu'>
    <cpuid eax_in='0x00000001' edx='0x00000001'/>
  </feature>
  <feature name='sse2'>
    <cpuid eax_in='0x00000001' edx='0x04000000'/>
  </feature>
</cpus>
""",
    "x86_TinyOld.xml": """<cpus>
  <model name='TinyOld'>
    <decode host='on' guest='on'/>
    <vendor name='Intel'/>
    <feature name='fpu'/>
  </model>
</cpus>
""",
    "x86_TinyNew.xml": """<cpus>
  <model name='TinyNew'>
    <decode host='on' guest='on'/>
    <signature family='6' model='158'/>
    <model name='TinyOld'/>
    <feature name='sse2'/>
  </model>
</cpus>
""",
}


@pytest.fixture
def tiny_cpu_map(tmp_path: Path) -> Path:
    directory = tmp_path / "cpu_map"
    directory.mkdir()
    (directory / "index.xml").write_text(TINY_INDEX)
    for name, text in TINY_FILES.items():
        (directory / name).write_text(text)
    return directory


def test_catalog_libvirt_models(tiny_cpu_map: Path) -> None:
    data = run_json("--catalog-libvirt", tiny_cpu_map, "models")
    assert [m["name"] for m in data["models"]] == ["TinyOld", "TinyNew"]
    assert {m["vendor"] for m in data["models"]} == {"Intel"}
    assert str(tiny_cpu_map) in data["catalog"]
    model = run_json("--catalog-libvirt", tiny_cpu_map, "model", "TinyNew")
    assert model["features"] == ["fpu", "sse2"]


def test_catalog_libvirt_host_decode(tiny_cpu_map: Path) -> None:
    out = run("--catalog-libvirt", tiny_cpu_map, "host", "--cpuid", I7_7700).stdout
    cpu = parse_cpu(out.encode(), "out")
    assert cpu.model == "TinyNew"
    assert [f.name for f in cpu.features] == ["sse4.1"]  # the only other feature this map knows
    guest = run_json("--catalog-libvirt", tiny_cpu_map, "host", "--cpuid", I7_7700, "--flavor", "guest")
    assert guest["model"] == "TinyNew" and guest["required_features"] == ["sse4.1"]


def test_catalog_libvirt_from_environment(tiny_cpu_map: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUESTCPU_CATALOG_LIBVIRT", str(tiny_cpu_map))
    data = run_json("models")
    assert [m["name"] for m in data["models"]] == ["TinyOld", "TinyNew"]


def test_catalog_libvirt_replaces_builtin_models(tiny_cpu_map: Path, tmp_path: Path) -> None:
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>Skylake-Client</model></cpu>")
    result = CliRunner().invoke(cli, ["--catalog-libvirt", str(tiny_cpu_map), "compare", str(I7_7700), str(guest)])
    assert result.exit_code == 1
    assert "unknown CPU model 'Skylake-Client'" in str(result.exception)
    ok = write(tmp_path / "ok.xml", "<cpu match='exact'><model>TinyOld</model></cpu>")
    data = run_json("--catalog-libvirt", tiny_cpu_map, "compare", I7_7700, ok)
    assert data["result"] == "superset"
    assert data["extra_features"] == ["sse4.1", "sse2"]


# -- --models-dir ----------------------------------------------------------------------

FLEET_TOML = """\
# Our fleet CPU: EPYC-Rome-v4 without xsaves, plus vaes.
[[model]]
name = "FleetRome"
base = "EPYC-Rome-v4"
remove = ["xsaves"]
add = ["vaes"]
notes = "fleet CPU, 2024 refresh"
"""


def rome_with_vaes(tmp_path: Path) -> Path:
    """The real EPYC 7502 dump with the VAES bit (CPUID 7.0 ECX[9]) set."""
    data = parse_cpudata(EPYC_7502.read_bytes(), EPYC_7502.name)
    leaves = dict(data.leaves)
    eax, ebx, ecx, edx = leaves[(7, 0)]
    leaves[(7, 0)] = (eax, ebx, ecx | 1 << 9, edx)
    return write(tmp_path / "rome-vaes.xml", format_cpudata(CpuidData(leaves, data.msrs)))


def test_models_dir_dropin(tmp_path: Path) -> None:
    dropins = tmp_path / "models.d"
    dropins.mkdir()
    write(dropins / "fleet.toml", FLEET_TOML)
    data = run_json("--models-dir", dropins, "model", "FleetRome")
    assert data["vendor"] == "AMD"
    assert "vaes" in data["features"] and "xsaves" not in data["features"]
    assert data["source"] == str(dropins / "fleet.toml")
    models = run_json("--models-dir", dropins, "models", "--vendor", "AMD")
    assert "FleetRome" in [m["name"] for m in models["models"]]
    # without the option the model does not exist
    assert "FleetRome" not in [m["name"] for m in run_json("models")["models"]]


def test_models_dir_dropin_in_compare_and_decode(tmp_path: Path) -> None:
    dropins = tmp_path / "models.d"
    dropins.mkdir()
    write(dropins / "fleet.toml", FLEET_TOML)
    guest = write(tmp_path / "g.xml", "<cpu match='exact'><model>FleetRome</model></cpu>")
    # a real Rome lacks vaes
    data = run_json("--models-dir", dropins, "compare", EPYC_7502, guest)
    assert data["result"] == "incompatible" and data["missing_features"] == ["vaes"]
    # with vaes the fleet model fits and is what the dump decodes to
    dump = rome_with_vaes(tmp_path)
    assert run_json("--models-dir", dropins, "compare", dump, guest)["result"] == "superset"
    decoded = run_json("--models-dir", dropins, "host", "--cpuid", dump)
    assert decoded["model"] == "FleetRome"
    assert "vaes" not in decoded["required_features"]
    plain = run_json("host", "--cpuid", dump)
    assert plain["model"].startswith("EPYC-Rome-v") and "vaes" in plain["required_features"]


def test_models_dir_dropin_in_baseline(tmp_path: Path) -> None:
    dropins = tmp_path / "models.d"
    dropins.mkdir()
    write(dropins / "fleet.toml", FLEET_TOML)
    dump = rome_with_vaes(tmp_path)
    out = run("--models-dir", dropins, "baseline", "--model", "FleetRome", "--model", "EPYC-Rome-v1", dump).stdout
    assert parse_cpu(out.encode(), "b").model == "FleetRome"
