"""Wrong input gets one clear line on stderr and exit status 1, never a traceback.

Every case runs twice: in-process through ``guestcpu.cli.main.main`` (the console
script's entry point) and as a real ``python -m guestcpu.cli.main`` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from guestcpu.cli.main import main

DATA = Path(__file__).parent / "data"
CPUTESTDATA = DATA / "libvirt-11.3" / "cputestdata"
HOST = CPUTESTDATA / "x86_64-host.xml"  # a libvirt host <cpu> (Penryn)
GUEST = CPUTESTDATA / "x86_64-guest.xml"  # a libvirt guest <cpu> (Penryn)
DUMP = CPUTESTDATA / "x86_64-cpuid-Core-i7-7700.xml"
AMD_DUMP = CPUTESTDATA / "x86_64-cpuid-EPYC-7502-32-Core.xml"

PASSWD = Path("/etc/passwd")

BAD_FILES: dict[str, str | bytes] = {
    "malformed.xml": "<cpu match='exact'>\n  <model>Penryn</model\n</cpu>\n",
    "malformed-cpudata.xml": "<cpudata arch='x86'>\n  <cpuid eax_in='0x00000000' ecx_in='0x00'\n",
    "empty.xml": "",
    "blank.xml": "\n   \n\t\n",
    "binary.dat": b"\x00\x01\x02\xffgarbage\x00",
    "unknown-model.xml": "<cpu mode='custom' match='exact'>\n"
    "  <model fallback='forbid'>Skylake-Clinet</model>\n</cpu>\n",
    "unknown-model-host.xml": "<cpu>\n  <arch>x86_64</arch>\n  <model>Haswel</model>\n"
    "  <vendor>Intel</vendor>\n</cpu>\n",
    "unknown-feature.xml": "<cpu mode='custom' match='exact'>\n  <model>Penryn</model>\n"
    "  <feature policy='require' name='avx512ff'/>\n</cpu>\n",
    "unknown-feature-host.xml": "<cpu>\n  <arch>x86_64</arch>\n  <model>Penryn</model>\n  <vendor>Intel</vendor>\n"
    "  <feature name='sse4_3'/>\n</cpu>\n",
    "ppc64-cpudata.xml": "<cpudata arch='ppc64'>\n  <pvr value='0x004e1202'/>\n</cpudata>\n",
    "ppc64-cpu.xml": "<cpu>\n  <arch>ppc64</arch>\n  <model>POWER9</model>\n  <vendor>IBM</vendor>\n</cpu>\n",
    "domain-no-cpu.xml": "<domain type='kvm'>\n  <name>nocpu</name>\n  <memory unit='MiB'>64</memory>\n"
    "  <os><type arch='x86_64'>hvm</type></os>\n</domain>\n",
    "capabilities-no-cpu.xml": "<capabilities>\n  <host>\n    <uuid>00000000-0000-0000-0000-000000000000</uuid>\n"
    "  </host>\n</capabilities>\n",
    "not-libvirt.xml": "<inventory><server name='a'/></inventory>\n",
    "bad-policy.xml": "<cpu mode='custom' match='exact'>\n  <model>Penryn</model>\n"
    "  <feature policy='maybe' name='sse4.1'/>\n</cpu>\n",
    "bad-match.xml": "<cpu match='sloppy'>\n  <model>Penryn</model>\n</cpu>\n",
    "duplicate-feature.xml": "<cpu match='exact'>\n  <model>Penryn</model>\n  <feature name='sse2'/>\n"
    "  <feature name='sse2' policy='disable'/>\n</cpu>\n",
    "bad-number.xml": "<cpudata arch='x86'>\n  <cpuid eax_in='0x00000000' ecx_in='0x00' eax='zz' ebx='0x0' ecx='0x0'"
    " edx='0x0'/>\n</cpudata>\n",
    "unknown-vendor.xml": "<cpudata arch='x86'>\n  <cpuid eax_in='0x00000000' ecx_in='0x00' eax='0x00000001'"
    " ebx='0x68532020' ecx='0x20206961' edx='0x68676e61'/>\n</cpudata>\n",
    "two-guests.xml": "<cpu match='exact'><model>Penryn</model></cpu>\n"
    "<cpu match='exact'><model>Nehalem</model></cpu>\n",
}


def _two_vendors() -> str:
    return (CPUTESTDATA / "x86_64-host.xml").read_text() + (CPUTESTDATA / "x86_64-host-amd.xml").read_text()


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    directory = tmp_path / "in"
    directory.mkdir()
    for name, content in BAD_FILES.items():
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            (directory / name).write_text(content)
    (directory / "two-vendors.xml").write_text(_two_vendors())
    (directory / "a-directory").mkdir()
    return directory


@dataclass(frozen=True)
class Case:
    id: str
    #: the command line; "@name" is the bad file ``name``
    argv: list[str | Path]
    #: what the one error line must say
    says: tuple[str, ...]

    def args(self, directory: Path) -> list[str]:
        return [str(directory / a[1:]) if isinstance(a, str) and a.startswith("@") else str(a) for a in self.argv]


CASES = [
    # malformed XML
    Case("malformed-guest", ["compare", HOST, "@malformed.xml"], ("malformed.xml", "not well-formed XML")),
    Case("malformed-host", ["compare", "@malformed.xml", GUEST], ("malformed.xml", "not well-formed XML")),
    Case("malformed-baseline", ["baseline", HOST, "@malformed.xml"], ("malformed.xml", "not well-formed XML")),
    Case("malformed-cpudata", ["host", "--cpuid", "@malformed-cpudata.xml"],
         ("malformed-cpudata.xml", "not well-formed XML")),
    # empty files
    Case("empty-guest", ["compare", HOST, "@empty.xml"], ("empty.xml", "empty")),
    Case("empty-host", ["compare", "@empty.xml", GUEST], ("empty.xml", "empty")),
    Case("empty-baseline", ["baseline", "@empty.xml"], ("empty.xml", "empty")),
    Case("empty-cpuid", ["host", "--cpuid", "@empty.xml"], ("empty.xml", "empty")),
    Case("blank-file", ["baseline", "@blank.xml"], ("blank.xml", "empty")),
    Case("binary-file", ["compare", HOST, "@binary.dat"], ("binary.dat", "neither XML")),
    # missing files and directories
    Case("missing-guest", ["compare", HOST, "@nope.xml"], ("nope.xml", "no such file")),
    Case("missing-host", ["compare", "@nope.xml", GUEST], ("nope.xml", "no such file")),
    Case("missing-baseline", ["baseline", HOST, "@nope.xml"], ("nope.xml", "no such file")),
    Case("missing-cpuid", ["host", "--cpuid", "@nope.xml"], ("nope.xml", "no such file")),
    Case("directory-guest", ["compare", HOST, "@a-directory"], ("a-directory", "is a directory")),
    Case("directory-baseline", ["baseline", "@a-directory"], ("a-directory", "is a directory")),
    Case("directory-cpuid", ["host", "--cpuid", "@a-directory"], ("a-directory", "is a directory")),
    # unknown model, with a did-you-mean
    Case("unknown-model-guest", ["compare", HOST, "@unknown-model.xml"],
         ("unknown CPU model 'Skylake-Clinet'", "did you mean 'Skylake-Client'")),
    Case("unknown-model-host", ["baseline", "@unknown-model-host.xml"],
         ("unknown CPU model 'Haswel'", "did you mean", "'Haswell'")),
    Case("unknown-model-command", ["model", "Skylake-Clinet"],
         ("unknown CPU model 'Skylake-Clinet'", "did you mean 'Skylake-Client'")),
    Case("unknown-model-option", ["baseline", "--model", "Skylake-Clinet", HOST],
         ("unknown CPU model 'Skylake-Clinet'", "--model", "did you mean 'Skylake-Client'")),
    # unknown feature, with a did-you-mean
    Case("unknown-feature-guest", ["compare", HOST, "@unknown-feature.xml"],
         ("unknown CPU feature 'avx512ff'", "did you mean 'avx512f'")),
    Case("unknown-feature-host", ["baseline", "@unknown-feature-host.xml"],
         ("unknown CPU feature 'sse4_3'", "did you mean", "sse4.")),
    # another architecture
    Case("ppc64-cpudata-host", ["host", "--cpuid", "@ppc64-cpudata.xml"],
         ("ppc64-cpudata.xml", "'ppc64'", "x86")),
    Case("ppc64-cpudata-compare", ["compare", "@ppc64-cpudata.xml", GUEST],
         ("ppc64-cpudata.xml", "'ppc64'")),
    Case("ppc64-cpudata-baseline", ["baseline", DUMP, "@ppc64-cpudata.xml"],
         ("ppc64-cpudata.xml", "'ppc64'")),
    Case("ppc64-cpu-compare", ["compare", "@ppc64-cpu.xml", GUEST],
         ("ppc64-cpu.xml", "arch 'ppc64'", "x86_64")),
    Case("ppc64-cpu-baseline", ["baseline", HOST, "@ppc64-cpu.xml"],
         ("ppc64-cpu.xml", "arch 'ppc64'", "x86_64")),
    # XML without a <cpu>
    Case("domain-without-cpu", ["compare", HOST, "@domain-no-cpu.xml"],
         ("domain-no-cpu.xml", "no <cpu>", "<domain>")),
    Case("capabilities-without-cpu", ["compare", "@capabilities-no-cpu.xml", GUEST],
         ("capabilities-no-cpu.xml", "no <cpu>")),
    Case("other-xml", ["baseline", "@not-libvirt.xml"], ("not-libvirt.xml", "no <cpu>", "<inventory>")),
    Case("cpu-xml-given-as-dump", ["host", "--cpuid", HOST], ("x86_64-host.xml", "not a CPUID dump")),
    Case("dump-given-as-guest", ["compare", HOST, DUMP], ("CPUID dump", "guest <cpu>")),
    Case("two-guests", ["compare", HOST, "@two-guests.xml"], ("two-guests.xml", "one guest <cpu>")),
    # bad values
    Case("bad-policy", ["compare", HOST, "@bad-policy.xml"],
         ("bad-policy.xml", "feature policy 'maybe'", "force, require, optional, disable, forbid")),
    Case("bad-match", ["compare", HOST, "@bad-match.xml"], ("bad-match.xml", "'sloppy'", "strict")),
    Case("duplicate-feature", ["compare", HOST, "@duplicate-feature.xml"],
         ("duplicate-feature.xml", "'sse2'", "more than once")),
    Case("bad-number", ["host", "--cpuid", "@bad-number.xml"], ("bad-number.xml", "'zz'", "not a number")),
    Case("unknown-cpu-vendor", ["host", "--cpuid", "@unknown-vendor.xml"],
         ("Shanghai", "GenuineIntel")),
    Case("unknown-vendor-option", ["models", "--vendor", "AMDD"], ("unknown CPU vendor 'AMDD'", "'AMD'")),
    # baselines across vendors
    Case("baseline-two-vendors-one-file", ["baseline", "@two-vendors.xml"],
         ("vendors do not match", "Intel", "AMD")),
    Case("baseline-two-vendors-two-dumps", ["baseline", DUMP, AMD_DUMP],
         ("vendors do not match", "Intel", "AMD")),
    # a libvirt cpu_map that is not one
    Case("catalog-libvirt-not-a-map", ["--catalog-libvirt", "@a-directory", "models"],
         ("a-directory", "cpu_map", "index.xml")),
]


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    code = exit_info.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GUESTCPU_CATALOG_LIBVIRT"}
    env["XDG_CONFIG_HOME"] = str(home)
    return env


def run_process(args: list[str], home: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "guestcpu.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(home),
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(autouse=True)
def isolated_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("guestcpu.catalog.paths.SYSTEM_DROPIN_DIR", tmp_path / "etc-models.d")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("GUESTCPU_CATALOG_LIBVIRT", raising=False)


def assert_one_error_line(code: int, out: str, err: str, says: tuple[str, ...] = ()) -> str:
    assert "Traceback" not in err and "Traceback" not in out
    assert code == 1, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("guestcpu: error: "), line
    for text in says:
        assert text in line, f"{text!r} not in {line!r}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case: Case, bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_in_process(case.args(bad), capsys)
    assert_one_error_line(code, out, err, case.says)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_real_process(case: Case, bad: Path, tmp_path: Path) -> None:
    code, out, err = run_process(case.args(bad), tmp_path / "xdg")
    assert_one_error_line(code, out, err, case.says)


# -- XXE -------------------------------------------------------------------------------

XXE_DOCS = {
    "model-text": '<?xml version="1.0"?>\n<!DOCTYPE cpu [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    "<cpu match='exact'>\n  <model>&xxe;</model>\n</cpu>\n",
    "vendor-text": '<?xml version="1.0"?>\n<!DOCTYPE cpu [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    "<cpu>\n  <arch>x86_64</arch>\n  <model>Penryn</model>\n  <vendor>&xxe;</vendor>\n</cpu>\n",
    "feature-attribute": '<?xml version="1.0"?>\n<!DOCTYPE cpu [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    "<cpu match='exact'>\n  <model>Penryn</model>\n  <feature policy='require' name='&xxe;'/>\n</cpu>\n",
    "parameter-entity": '<?xml version="1.0"?>\n<!DOCTYPE cpu [<!ENTITY % xxe SYSTEM "file:///etc/passwd"> %xxe;]>\n'
    "<cpu match='exact'>\n  <model>Penryn</model>\n</cpu>\n",
    "cpudata": '<?xml version="1.0"?>\n<!DOCTYPE cpudata [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    "<cpudata arch='x86'>&xxe;\n  <cpuid eax_in='0x00000000' ecx_in='0x00' eax='0x00000016' ebx='0x756e6547'"
    " ecx='0x6c65746e' edx='0x49656e69'/>\n</cpudata>\n",
}


def _xxe_commands(path: Path) -> list[list[str]]:
    return [
        ["compare", str(HOST), str(path)],
        ["compare", str(path), str(GUEST)],
        ["baseline", str(path)],
        ["host", "--cpuid", str(path)],
        ["compare", "--json", str(HOST), str(path)],
    ]


def _passwd_markers() -> list[str]:
    if not PASSWD.is_file():
        return ["root:x:0:0"]
    lines = [line for line in PASSWD.read_text().splitlines() if line.count(":") >= 6]
    return [line for line in lines[:3] if line] or ["root:x:0:0"]


@pytest.mark.parametrize("doc", sorted(XXE_DOCS))
def test_xxe_never_leaks_local_files(doc: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"xxe-{doc}.xml"
    path.write_text(XXE_DOCS[doc])
    markers = _passwd_markers()
    for args in _xxe_commands(path):
        code, out, err = run_process(args, tmp_path / "xdg")
        assert "Traceback" not in err
        assert code in (0, 1), (args, err)
        for marker in markers:
            assert marker not in out and marker not in err, args
        for part in ("root:", "/bin/bash", "/usr/sbin/nologin"):
            assert part not in out + err, args


XXE_REJECTED = [
    pytest.param("vendor-text", ["baseline"], id="vendor-text"),
    pytest.param("feature-attribute", ["compare", str(HOST)], id="feature-attribute"),
    pytest.param(
        "model-text",
        ["compare", str(HOST)],
        id="model-text",
    ),
]


@pytest.mark.parametrize(("doc", "command"), XXE_REJECTED)
def test_xxe_document_is_rejected(
    doc: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"xxe-{doc}.xml"
    path.write_text(XXE_DOCS[doc])
    code, out, err = run_in_process([*command, str(path)], capsys)
    assert_one_error_line(code, out, err, (path.name,))


def test_entity_expansion_bomb_is_harmless(tmp_path: Path) -> None:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {n} "{("&" + p + ";") * 10}">' for p, n in zip("abcdefg", "bcdefgh", strict=True)
    )
    path = tmp_path / "lol.xml"
    doc = f'<?xml version="1.0"?>\n<!DOCTYPE cpu [{entities}]>\n<cpu match="exact"><model>&h;</model></cpu>\n'
    path.write_text(doc)
    _, out, err = run_process(["compare", str(HOST), str(path)], tmp_path / "xdg")
    assert "Traceback" not in err
    assert "aaaaaaaaaa" not in out + err
    assert len(out) + len(err) < 10_000


# -- corrupt drop-ins ------------------------------------------------------------------

DROPINS = {
    "bad-json": (
        "fleet.json",
        '{"model": [\n  {"name": "FleetRome", "base": "EPYC-Rome-v4",}\n]}\n',
        ("not valid JSON",),
    ),
    "bad-toml": ("fleet.toml", '[[model]\nname = "FleetRome"\n', ("not valid TOML",)),
    "unknown-key": (
        "fleet.toml",
        '[[model]]\nname = "FleetRome"\nbase = "EPYC-Rome-v4"\nremvoe = ["xsaves"]\n',
        ("FleetRome", "unknown key", "remvoe", "remove"),
    ),
    "unknown-feature-in-add": (
        "fleet.toml",
        '[[model]]\nname = "FleetRome"\nbase = "EPYC-Rome-v4"\nadd = ["vaess"]\n',
        ("unknown CPU feature 'vaess'", "did you mean 'vaes'"),
    ),
    "unknown-feature-in-remove": (
        "fleet.json",
        '{"model": [{"name": "FleetRome", "base": "EPYC-Rome-v4", "remove": ["xsave_s"]}]}',
        ("unknown CPU feature 'xsave_s'", "did you mean"),
    ),
    "unknown-base": (
        "fleet.json",
        '{"model": [{"name": "FleetRome", "base": "EPYC-Rom-v4"}]}',
        ("unknown CPU model 'EPYC-Rom-v4'", "did you mean 'EPYC-Rome-v4'"),
    ),
    "no-model-list": ("fleet.json", '{"models": [{"name": "FleetRome"}]}', ("'model' list",)),
    "no-base-no-features": ("fleet.json", '{"model": [{"name": "FleetRome"}]}', ("FleetRome", "base")),
    "add-not-a-list": (
        "fleet.json",
        '{"model": [{"name": "FleetRome", "base": "EPYC-Rome-v4", "add": "vaes"}]}',
        ("FleetRome", "'add'", "list"),
    ),
    "no-name": ("fleet.toml", '[[model]]\nbase = "EPYC-Rome-v4"\n', ("name",)),
    "unknown-vendor": (
        "fleet.toml",
        '[[model]]\nname = "FleetRome"\nbase = "EPYC-Rome-v4"\nvendor = "AMDD"\n',
        ("unknown CPU vendor 'AMDD'", "'AMD'"),
    ),
}


@pytest.mark.parametrize("name", sorted(DROPINS))
def test_corrupt_dropin_names_the_file(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filename, content, says = DROPINS[name]
    models_d = tmp_path / "models.d"
    models_d.mkdir()
    (models_d / filename).write_text(content)
    code, out, err = run_in_process(["--models-dir", str(models_d), "models"], capsys)
    assert_one_error_line(code, out, err, (str(models_d / filename), *says))


@pytest.mark.parametrize("name", ["bad-json", "unknown-key", "unknown-feature-in-add", "unknown-base"])
def test_corrupt_dropin_in_user_config_dir(name: str, tmp_path: Path) -> None:
    """Found through $XDG_CONFIG_HOME in a real process, for any command that loads the catalog."""
    filename, content, says = DROPINS[name]
    home = tmp_path / "xdg"
    models_d = home / "guestcpu" / "models.d"
    models_d.mkdir(parents=True)
    (models_d / filename).write_text(content)
    for args in (["models"], ["compare", str(HOST), str(GUEST)], ["host", "--cpuid", str(DUMP)]):
        code, out, err = run_process(args, home)
        assert_one_error_line(code, out, err, (str(models_d / filename), *says))
