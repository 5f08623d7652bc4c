"""guestcpu run as root against another local user: each attack of issue 7 as a test.

The attacker is a real unprivileged user (created with ``useradd`` when missing) who
plants files with ``runuser``; guestcpu runs as root, as it does on a KVM host.  Each
test asserts that no planted code runs, no file outside guestcpu's own folders is
touched and no forged answer is served, and that the refusal is one clear line.
Tests that need root skip with the reason where guestcpu does not run as root.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guestcpu.catalog.cache import _fingerprint, _source_files
from guestcpu.catalog.paths import SYSTEM_DROPIN_DIR
from guestcpu.errors import InputError
from guestcpu.formats.files import MAX_JSON_DEPTH, Output, json_depth_exceeds, loads_json, read_bytes, write_outputs
from guestcpu.qemu.cache import cache_name, load_caps
from guestcpu.qemu.process import resolve_binary
from qemu_support import QEMU, processes_with, wait_gone

ATTACKER = "guestcpu-attacker"
ROOT_REASON = None if os.geteuid() == 0 else "the attacks are run against guestcpu as root; this run is not root"
needs_root = pytest.mark.skipif(ROOT_REASON is not None, reason=str(ROOT_REASON))
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")

GUEST = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>{extra}</cpu>
</domain>
"""
UUID_A = "c7a5fdbd-cdaf-9455-926a-d65c16db1809"
UUID_B = "0a9f8a3e-59a1-4c5e-8d87-2f3d4f6c1b2a"


# -- the attacker and the places guestcpu is pointed at ---------------------------------------------


@pytest.fixture(scope="session")
def attacker() -> pwd.struct_passwd:
    if ROOT_REASON:
        pytest.skip(ROOT_REASON)
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("useradd/runuser are not installed (Debian: passwd, util-linux)")
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create the test user {ATTACKER}: {made.stderr.strip()}")
    return pwd.getpwnam(ATTACKER)


def as_attacker(*argv: str | Path) -> None:
    subprocess.run(["runuser", "-u", ATTACKER, "--", *map(str, argv)], check=True, capture_output=True)


@pytest.fixture()
def arena() -> Iterator[Path]:
    """A folder the attacker can reach (pytest's own tmp folders are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="guestcpu-security-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def hostile_xdg(attacker: pwd.struct_passwd, arena: Path) -> Path:
    """An XDG_CACHE_HOME the attacker owns (``sudo -E`` with their environment, or a shared folder)."""
    xdg = arena / "xdg"
    xdg.mkdir()
    os.chown(xdg, attacker.pw_uid, attacker.pw_gid)
    as_attacker("mkdir", "-m", "0755", xdg / "guestcpu")
    return xdg


def listing(directory: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry below ``directory`` with its owner, mode and content (or link target)."""
    found: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(directory.rglob("*")):
        st_ = path.lstat()
        if path.is_symlink():
            content: bytes | str = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = "dir"
        found[str(path.relative_to(directory))] = (st_.st_uid, stat.S_IMODE(st_.st_mode), content)
    return found


def guestcpu(args: list[str | Path], env: dict[str, str], *, umask: int = 0o022,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guestcpu.cli.main", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=timeout, check=False,
                          preexec_fn=lambda: os.umask(umask) and None)


def one_error_line(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guestcpu: error: "), done.stderr
    return lines[0]


def catalog_cache_names(config_home: Path) -> tuple[str, str]:
    """The names the catalog cache has for the built-in catalog with no drop-ins (computable by anyone)."""
    dirs = [SYSTEM_DROPIN_DIR, config_home / "guestcpu" / "models.d"]
    key = _fingerprint(_source_files(None, dirs))
    stem = f"catalog-{zlib.crc32(key.encode()):08x}-{len(key):x}"
    return f"{stem}.pickle", f"{stem}.json"


def forged_catalog_cache(config_home: Path) -> dict[str, Any]:
    """A well-formed catalog cache with the right key and a model that does not exist."""
    from dataclasses import replace

    from guestcpu.catalog.cache import FORMAT, SCHEMA, catalog_to_data
    from guestcpu.catalog.catalog import Catalog
    from guestcpu.catalog.loader import load_catalog

    dirs = [SYSTEM_DROPIN_DIR, config_home / "guestcpu" / "models.d"]
    real = load_catalog(None, dirs)
    fake = replace(real.models[-1], name="Forged-9000", alias_of=None)
    forged = Catalog(real.features, real.vendors, (*real.models, fake), real.source)
    return {"schema": SCHEMA, "format": FORMAT, "key": _fingerprint(_source_files(None, dirs)),
            "catalog": catalog_to_data(forged)}


@needs_root
def test_the_forged_catalog_would_be_served_from_a_private_folder(arena: Path) -> None:
    """The forgery above is well-formed: only the folder's ownership keeps it out."""
    config = arena / "config"
    config.mkdir()
    _, json_name = catalog_cache_names(config)
    private = arena / "private"
    (private / "guestcpu").mkdir(parents=True, mode=0o700)
    (private / "guestcpu" / json_name).write_text(json.dumps(forged_catalog_cache(config)))
    done = guestcpu(["models", "--json"], {"XDG_CACHE_HOME": str(private), "XDG_CONFIG_HOME": str(config)})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Forged-9000" in [m["name"] for m in json.loads(done.stdout)["models"]]


class Payload:
    """What an attacker pickles: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


# -- 1. no executable format is read from disk ------------------------------------------------------


@needs_root
def test_planted_pickle_and_forged_catalog_in_another_users_cache_are_never_used(
    hostile_xdg: Path, arena: Path
) -> None:
    config = arena / "config"
    config.mkdir()
    pickle_name, json_name = catalog_cache_names(config)
    marker = arena / "code-ran"
    (arena / "plant.pickle").write_bytes(pickle.dumps(("key", Payload(f"touch {marker}"))))
    (arena / "plant.json").write_text(json.dumps(forged_catalog_cache(config)))
    for src, name in (("plant.pickle", pickle_name), ("plant.json", json_name)):
        as_attacker("cp", arena / src, hostile_xdg / "guestcpu" / name)
    before = listing(hostile_xdg)

    done = guestcpu(["models", "--json"], {"XDG_CACHE_HOME": str(hostile_xdg), "XDG_CONFIG_HOME": str(config)})

    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    names = [m["name"] for m in json.loads(done.stdout)["models"]]
    assert "Forged-9000" not in names and "Skylake-Client-v4" in names  # the real catalog, from package data
    warning = done.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("guestcpu: warning: cache folder ")
    assert f"owned by uid {pwd.getpwnam(ATTACKER).pw_uid}" in warning[0]
    assert listing(hostile_xdg) == before  # root wrote nothing into the attacker's folder


@needs_root
def test_an_old_pickle_cache_in_a_private_folder_is_never_unpickled(arena: Path) -> None:
    """Even root's own folder may hold a pickle from an older guestcpu: it is not read, and it is removed."""
    config = arena / "config"
    config.mkdir()
    xdg = arena / "private"
    (xdg / "guestcpu").mkdir(parents=True, mode=0o700)
    pickle_name, json_name = catalog_cache_names(config)
    marker = arena / "code-ran"
    (xdg / "guestcpu" / pickle_name).write_bytes(pickle.dumps(("key", Payload(f"touch {marker}"))))
    env = {"XDG_CACHE_HOME": str(xdg), "XDG_CONFIG_HOME": str(config)}
    done = guestcpu(["models"], env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not marker.exists()
    assert not (xdg / "guestcpu" / pickle_name).exists()
    assert json.loads((xdg / "guestcpu" / json_name).read_text())["schema"] == "guestcpu/catalog-cache"
    assert stat.S_IMODE((xdg / "guestcpu" / json_name).stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["truncated", "wrong-types", "bool-for-int", "bits-outside", "deep", "symlink"])
def test_a_damaged_catalog_cache_is_rebuilt_never_trusted(damage: str, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    xdg = tmp_path / "xdg"
    env = {"XDG_CACHE_HOME": str(xdg), "XDG_CONFIG_HOME": str(config)}
    assert guestcpu(["models"], env).returncode == 0
    _, json_name = catalog_cache_names(config)
    path = xdg / "guestcpu" / json_name
    good = path.read_bytes()
    doc = json.loads(good)
    first = doc["catalog"]["models"][0]
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "wrong-types":
        first[1] = "not an order"
        path.write_text(json.dumps(doc))
    elif damage == "bool-for-int":
        doc["catalog"]["features"][0][5] = True
        path.write_text(json.dumps(doc))
    elif damage == "bits-outside":
        first[3] = 1 << 5000
        path.write_text(json.dumps(doc))
    elif damage == "deep":
        path.write_text('{"schema": "guestcpu/catalog-cache", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        target = tmp_path / "elsewhere.json"
        target.write_bytes(good)
        path.unlink()
        path.symlink_to(target)
    done = guestcpu(["models", "--json"], env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Skylake-Client-v4" in [m["name"] for m in json.loads(done.stdout)["models"]]
    assert not path.is_symlink() and json.loads(path.read_bytes()) == json.loads(good)  # rebuilt in place


@needs_root
def test_drop_ins_another_user_can_write_are_refused(attacker: pwd.struct_passwd, arena: Path) -> None:
    """Drop-ins change every answer: as root with another user's XDG_CONFIG_HOME, they are not read."""
    config = arena / "config"
    config.mkdir()
    os.chown(config, attacker.pw_uid, attacker.pw_gid)
    as_attacker("mkdir", "-p", config / "guestcpu" / "models.d")
    evil = {"model": [{"name": "Skylake-Client-v4", "base": "qemu64", "notes": "forged"}]}
    (arena / "evil.json").write_text(json.dumps(evil))
    as_attacker("cp", arena / "evil.json", config / "guestcpu" / "models.d" / "evil.json")
    env = {"XDG_CONFIG_HOME": str(config), "XDG_CACHE_HOME": str(arena / "cache")}
    line = one_error_line(guestcpu(["model", "Skylake-Client-v4", "--json"], env))
    assert f"drop-in folder {config / 'guestcpu' / 'models.d'} is not safe to read" in line
    assert f"owned by uid {attacker.pw_uid}" in line
    # A folder that is root's but a file in it another user may write: refused as well.
    mine = arena / "mine"
    (mine / "guestcpu" / "models.d").mkdir(parents=True)
    shared = mine / "guestcpu" / "models.d" / "shared.json"
    shared.write_text(json.dumps(evil))
    shared.chmod(0o666)
    line = one_error_line(guestcpu(["models"], {**env, "XDG_CONFIG_HOME": str(mine)}))
    assert f"drop-in {shared} is not safe to read" in line and "mode 0666" in line
    shared.chmod(0o644)
    done = guestcpu(["models", "--json"], {**env, "XDG_CONFIG_HOME": str(mine)})
    assert done.returncode == 0, done.stderr
    sources = {m["name"]: m["source"] for m in json.loads(done.stdout)["models"]}
    assert sources["Skylake-Client-v4"] == str(shared)  # a safe drop-in is read as before


def test_the_catalog_data_form_round_trips_exactly() -> None:
    from guestcpu.catalog.cache import catalog_from_data, catalog_to_data
    from guestcpu.catalog.loader import load_catalog

    built = load_catalog(None, [])
    again = catalog_from_data(json.loads(json.dumps(catalog_to_data(built))))
    assert (again.features, again.vendors, again.models, again.source) == (
        built.features, built.vendors, built.models, built.source)
    assert again.all_bits == built.all_bits and again.migratable_bits == built.migratable_bits


# -- 2. cache folders: trusted only when private, never through a symlink ------------------------------


def forged_caps(binary: str, xdg: Path) -> dict[str, Any]:
    """A real capabilities document of this host's QEMU, forged: every model usable, a fake version."""
    real = load_caps(binary, "tcg", cache_dir=xdg / "real").caps
    from guestcpu.qemu.caps import to_document

    doc = to_document(real)
    doc["qemu_version"] = "6.6.6-forged"
    for model in doc["models"]:
        model["usable"] = True
        model["blockers"] = []
    return doc


@needs_root
@needs_qemu
def test_forged_caps_symlinked_into_another_users_cache_is_not_served(hostile_xdg: Path, arena: Path) -> None:
    binary = resolve_binary(None)
    name = cache_name(binary, "x86_64", "tcg")
    (arena / "forged.json").write_text(json.dumps(forged_caps(binary, arena)))
    victim = arena / "victim"
    victim.mkdir()
    as_attacker("ln", "-s", arena / "forged.json", hostile_xdg / "guestcpu" / name)
    as_attacker("ln", "-s", victim / "created-by-root", hostile_xdg / "guestcpu" / f"{name}.lock")
    before = listing(hostile_xdg)

    done = guestcpu(["caps", "--accel", "tcg", "--json"], {"XDG_CACHE_HOME": str(hostile_xdg)})

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "forged" not in done.stdout and report["source"].endswith("(uncached)")
    assert sum(m["usable"] for m in report["models"]) < len(report["models"])  # TCG cannot run every model
    assert "cache folder" in done.stderr and "probing QEMU without a cache" in done.stderr
    assert list(victim.iterdir()) == []
    assert listing(hostile_xdg) == before


@needs_root
@needs_qemu
def test_a_symlinked_guestcpu_folder_does_not_redirect_root_writes(attacker: pwd.struct_passwd, arena: Path) -> None:
    xdg = arena / "xdg"
    xdg.mkdir()
    os.chown(xdg, attacker.pw_uid, attacker.pw_gid)
    victim = arena / "victim"
    victim.mkdir()
    as_attacker("ln", "-s", victim, xdg / "guestcpu")
    env = {"XDG_CACHE_HOME": str(xdg), "XDG_CONFIG_HOME": str(arena / "config")}
    for args in (["caps", "--accel", "tcg", "--json"], ["models"]):
        done = guestcpu(args, env)
        assert done.returncode == 0, done.stderr
        assert "is a symbolic link; guestcpu does not use it" in done.stderr
    assert list(victim.iterdir()) == []


@needs_root
@needs_qemu
def test_group_or_world_writable_cache_folder_is_refused(arena: Path) -> None:
    xdg = arena / "xdg"
    (xdg / "guestcpu").mkdir(parents=True)
    (xdg / "guestcpu").chmod(0o777)
    done = guestcpu(["caps", "--accel", "tcg", "--json"], {"XDG_CACHE_HOME": str(xdg)})
    assert done.returncode == 0, done.stderr
    assert "writable by its group and others (mode 0777)" in done.stderr
    assert list((xdg / "guestcpu").iterdir()) == []


@needs_qemu
def test_symlinks_inside_a_private_cache_are_replaced_not_followed(tmp_path: Path) -> None:
    """A symlink at a cache file's name (left by anyone, any time) is neither read through nor written through."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    binary = resolve_binary(None)
    name = cache_name(binary, "x86_64", "tcg")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(forged_caps(binary, tmp_path)))
    before = forged.read_bytes()
    (cache / name).symlink_to(forged)
    warnings: list[str] = []
    result = load_caps(binary, "tcg", cache_dir=cache, warn=warnings.append)
    assert result.status == "unreadable" and "symbolic link" in warnings[0]
    assert not result.caps.qemu_version.endswith("forged")
    assert forged.read_bytes() == before and not (cache / name).is_symlink()
    assert load_caps(binary, "tcg", cache_dir=cache).status == "hit"
    # A lock that is a symlink: not followed, the probe goes on without the cache.
    lock_target = tmp_path / "lock-target"
    (cache / f"{name}.lock").unlink()
    (cache / f"{name}.lock").symlink_to(lock_target)
    refreshed = load_caps(binary, "tcg", cache_dir=cache, refresh=True, warn=warnings.append)
    assert refreshed.status == "uncached" and "cannot lock" in warnings[-1]
    assert not lock_target.exists()


@needs_qemu
@pytest.mark.parametrize("how", ["in-place", "renamed-over"])
def test_a_binary_replaced_with_same_size_and_mtime_is_probed_again(how: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(f'#!/bin/sh\n# A\nexec {QEMU} "$@"\n')
    wrapper.chmod(0o755)
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status == "missing"
    st_ = wrapper.stat()
    other = f'#!/bin/sh\n# B\nexec {QEMU} "$@"\n'
    if how == "in-place":
        wrapper.write_text(other)
    else:
        fresh = tmp_path / "new"
        fresh.write_text(other)
        fresh.chmod(0o755)
        fresh.replace(wrapper)
    os.utime(wrapper, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert wrapper.stat().st_size == st_.st_size and wrapper.stat().st_mtime_ns == st_.st_mtime_ns
    status = load_caps(str(wrapper), "tcg", cache_dir=cache).status
    assert status.startswith("changed: ") and "sha256" in status and "ctime_ns" in status
    assert ("inode" in status) == (how == "renamed-over")
    assert load_caps(str(wrapper), "tcg", cache_dir=cache).status == "hit"


# -- 3. written files: umask, private captures, all-or-nothing, never through a symlink -------------------


@pytest.fixture(scope="module")
def xdg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg")


def write_guest(directory: Path, name: str = "web01", uid: str = UUID_A, extra: str = "",
                file: str = "guest.xml") -> Path:
    path = directory / file
    path.write_text(GUEST.format(name=name, uuid=uid, extra=extra))
    return path


@needs_qemu
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_pins_and_libvirt_xml_respect_the_umask(umask: int, tmp_path: Path, xdg_home: Path) -> None:
    guest = write_guest(tmp_path)
    done = guestcpu(["define", guest, "-o", tmp_path / "pin.json", "--libvirt-xml", tmp_path / "cpu.xml"],
                    {"XDG_CACHE_HOME": str(xdg_home)}, umask=umask)
    assert done.returncode == 0, done.stderr
    for name in ("pin.json", "cpu.xml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


@needs_qemu
@pytest.mark.parametrize(("mode", "expected"), [(None, 0o600), ("0644", 0o644), ("0640", 0o640)])
def test_captures_are_private_unless_asked(mode: str | None, expected: int, tmp_path: Path, xdg_home: Path) -> None:
    extra = ["--mode", mode] if mode else []
    done = guestcpu(["capture", "-o", tmp_path / "host.json", *extra], {"XDG_CACHE_HOME": str(xdg_home)})
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "host.json").stat().st_mode) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@needs_qemu
def test_define_writes_nothing_when_one_output_cannot_be_written(tmp_path: Path, xdg_home: Path) -> None:
    guest = write_guest(tmp_path)
    keep = tmp_path / "keep.xml"
    keep.write_text("<cpu>precious</cpu>")
    done = guestcpu(["define", guest, "-o", tmp_path / "missing" / "pin.json", "--libvirt-xml", keep],
                    {"XDG_CACHE_HOME": str(xdg_home)})
    assert "does not exist" in one_error_line(done)
    assert keep.read_text() == "<cpu>precious</cpu>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest.xml", "keep.xml"]


@needs_root
@needs_qemu
def test_outputs_replace_a_planted_symlink_instead_of_writing_through_it(
    attacker: pwd.struct_passwd, arena: Path, xdg_home: Path
) -> None:
    shared = arena / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    victim = arena / "victim.conf"
    victim.write_text("root's file\n")
    for name in ("pin.json", "cpu.xml", "host.json"):
        as_attacker("ln", "-s", victim, shared / name)
    guest = write_guest(arena)
    env = {"XDG_CACHE_HOME": str(xdg_home)}
    done = guestcpu(["define", guest, "-o", shared / "pin.json", "--libvirt-xml", shared / "cpu.xml"], env)
    assert done.returncode == 0, done.stderr
    done = guestcpu(["capture", "-o", shared / "host.json"], env)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "root's file\n"
    for name in ("pin.json", "cpu.xml", "host.json"):
        path = shared / name
        assert not path.is_symlink() and path.stat().st_uid == 0


def test_write_outputs_is_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old a")
    with pytest.raises(InputError, match="does not exist"):
        write_outputs([Output(str(tmp_path / "a"), "new a"), Output(str(tmp_path / "no" / "b"), "new b")])
    assert (tmp_path / "a").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    write_outputs([Output(str(tmp_path / "a"), "new a"), Output(str(tmp_path / "b"), "new b", mode=0o600)])
    assert (tmp_path / "a").read_text() == "new a" and stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


# -- 4. bounded input -------------------------------------------------------------------------------


@pytest.fixture()
def special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    return {"fifo": fifo, "device": Path("/dev/zero"), "directory": folder}


GOOD_CPU = "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>"


def commands_reading(path: Path, good: Path, out: Path) -> list[list[str | Path]]:
    """Every command that reads a file the user names, with ``path`` as that file."""
    return [
        ["host", "--cpuid", path],
        ["compare", path, good],
        ["compare", good, path],
        ["compare", "--caps", path, good],
        ["baseline", path],
        ["baseline", "--caps", path, good],
        ["cmdline", "--caps", path, good],
        ["cmdline", path],
        ["run", "--dry-run", path],
        ["define", path, "-o", out],
        ["start", path],
        ["migrate-check", path, "--to", good],
        ["restore-check", path, "--to", good],
        ["diff", path, good],
    ]


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_fifos_devices_and_directories_are_refused_by_type(
    kind: str, special_files: dict[str, Path], tmp_path: Path
) -> None:
    good = tmp_path / "good.xml"
    good.write_text(GOOD_CPU)
    path = special_files[kind]
    words = {"fifo": "is a FIFO", "device": "is a device", "directory": "is a directory"}
    for args in commands_reading(path, good, tmp_path / "out.json"):
        start = time.monotonic()
        done = guestcpu(args, {}, timeout=30)
        line = one_error_line(done)
        assert f"{path} {words[kind]}" in line, (args, line)
        assert time.monotonic() - start < 20
    if kind == "fifo":  # s390x-compare takes a file only when it is named *.xml
        assert f"{path} is a FIFO" in one_error_line(guestcpu(["s390x-compare", path], {}, timeout=30))
    assert not (tmp_path / "out.json").exists()


def test_inputs_above_the_size_limit_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    with big.open("wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    line = one_error_line(guestcpu(["baseline", big], {}))
    assert f"{big} is larger than 64 MiB" in line and "GUESTCPU_MAX_INPUT" in line
    small = tmp_path / "small.xml"
    small.write_text(GOOD_CPU + " " * 2048)
    line = one_error_line(guestcpu(["baseline", small], {"GUESTCPU_MAX_INPUT": "1K"}))
    assert "is larger than 1024 bytes" in line
    assert guestcpu(["baseline", small], {"GUESTCPU_MAX_INPUT": "1M"}).returncode == 0
    assert "not a size" in one_error_line(guestcpu(["baseline", small], {"GUESTCPU_MAX_INPUT": "lots"}))
    done = subprocess.run([sys.executable, "-m", "guestcpu.cli.main", "baseline", "-"], input=b"<" * 4096,
                          capture_output=True, env={**os.environ, "GUESTCPU_MAX_INPUT": "1K"}, timeout=60)
    assert b"standard input is larger than 1024 bytes" in done.stderr and done.returncode == 1


DEEP_JSON = "[" * 200_000 + "]" * 200_000


def test_deep_json_is_one_clear_error_in_every_reader(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP_JSON)
    good = tmp_path / "good.xml"
    good.write_text(GOOD_CPU)
    models_d = tmp_path / "models.d"
    models_d.mkdir()
    (models_d / "deep.json").write_text('{"model": ' + DEEP_JSON + "}")
    for args in (["start", deep], ["diff", deep, deep], ["migrate-check", deep, "--to", deep],
                 ["compare", "--caps", deep, good], ["baseline", "--caps", deep, good],
                 ["--models-dir", models_d, "models"]):
        line = one_error_line(guestcpu(args, {"GUESTCPU_NO_CATALOG_CACHE": "1"}))
        assert f"nests JSON deeper than {MAX_JSON_DEPTH} levels" in line, (args, line)
    # A capture document given where a host CPU is expected.
    capture_like = tmp_path / "capture.json"
    capture_like.write_text('{"schema": "guestcpu/host-capture", "x": ' + DEEP_JSON + "}")
    assert "nests JSON deeper" in one_error_line(guestcpu(["baseline", capture_like], {}))


def test_deep_xml_is_one_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.xml"
    deep.write_text("<cpu>" + "<a>" * 100_000 + "</a>" * 100_000 + "</cpu>")
    line = one_error_line(guestcpu(["baseline", deep], {}))
    assert f"{deep} is not well-formed XML" in line


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\'), inner, max_size=3)


JSON_VALUES = st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\ab'), _containers, max_leaves=80)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_json_depth_check_agrees_with_the_real_depth(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value).encode()
    for limit in (1, 2, 3, 5):
        assert json_depth_exceeds(text, limit) == (depth(value) > limit)


def test_loads_json_never_raises_recursion_error() -> None:
    for bomb in (DEEP_JSON, '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 100_000):
        with pytest.raises(InputError, match="nests JSON deeper"):
            loads_json(bomb, "bomb", "a document")


@pytest.mark.parametrize("stepping", ["0-100000000", "0-16", "3-1", "1-", "x", "-5", "99999999999999999999"])
@pytest.mark.parametrize("form", ["json", "toml", "cpu_map"])
def test_stepping_ranges_are_checked_before_they_are_expanded(stepping: str, form: str, tmp_path: Path) -> None:
    if form == "cpu_map":
        cpu_map = tmp_path / "cpu_map"
        cpu_map.mkdir()
        (cpu_map / "index.xml").write_text("<cpus><arch name='x86'><include filename='x86_vendors.xml'/>"
                                           "<include filename='x86_features.xml'/><include filename='x86_M.xml'/>"
                                           "</arch></cpus>")
        (cpu_map / "x86_vendors.xml").write_text("<cpus><vendor name='Intel' string='GenuineIntel'/></cpus>")
        (cpu_map / "x86_features.xml").write_text("<cpus><feature name='fpu'><cpuid eax_in='0x00000001' "
                                                  "edx='0x00000001'/></feature></cpus>")
        (cpu_map / "x86_M.xml").write_text(f"<cpus><model name='M'><decode host='on' guest='on'/><signature "
                                           f"family='6' model='94' stepping='{stepping}'/><vendor name='Intel'/>"
                                           "<feature name='fpu'/></model></cpus>")
        args: list[str | Path] = ["--catalog-libvirt", cpu_map, "models"]
    else:
        models_d = tmp_path / "models.d"
        models_d.mkdir()
        if form == "json":
            doc = {"model": [{"name": "Mine", "base": "qemu64",
                              "signatures": [{"family": 6, "model": 1, "stepping": stepping}]}]}
            (models_d / "mine.json").write_text(json.dumps(doc))
        else:
            (models_d / "mine.toml").write_text(f'[[model]]\nname = "Mine"\nbase = "qemu64"\n'
                                                f'signatures = [{{family = 6, model = 1, stepping = "{stepping}"}}]\n')
        args = ["--models-dir", models_d, "models"]
    start = time.monotonic()
    line = one_error_line(guestcpu(args, {"GUESTCPU_NO_CATALOG_CACHE": "1"}, timeout=30))
    assert "stepping" in line and stepping[:10] in line, line
    assert time.monotonic() - start < 20


def test_a_valid_stepping_list_still_works() -> None:
    from guestcpu.catalog.loader import parse_steppings

    assert parse_steppings("0-3,5") == 0b101111
    assert parse_steppings("15") == 1 << 15
    with pytest.raises(InputError, match="outside 0-15"):
        parse_steppings("0-100000000", "x.json")


def test_read_bytes_refuses_a_fifo_swapped_in_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(InputError, match="is a FIFO"):
        read_bytes(fifo, "a file")
    assert time.monotonic() - start < 2


# -- 5. signals and processes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcg_pin(tmp_path_factory: pytest.TempPathFactory, xdg_home: Path) -> Path:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    folder = tmp_path_factory.mktemp("pin")
    guest = write_guest(folder)
    done = guestcpu(["define", guest, "-o", folder / "pin.json"], {"XDG_CACHE_HOME": str(xdg_home)})
    assert done.returncode == 0, done.stderr
    return folder / "pin.json"


def setsid_wrapper(directory: Path, token: str, double_fork: bool) -> Path:
    """A QEMU wrapper whose child escapes QEMU's session (and, double-forked, its parentage)."""
    wrapper = directory / "qemu-wrapper"
    child = f"(setsid sleep {token} &)" if double_fork else f"setsid sleep {token} &"
    wrapper.write_text(f'#!/bin/sh\n{child}\nexec {QEMU} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@needs_qemu
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("double_fork", [False, True])
def test_sigterm_and_sighup_stop_qemu_like_ctrl_c(
    signum: int, status: int, double_fork: bool, tcg_pin: Path, tmp_path: Path, xdg_home: Path
) -> None:
    token = f"{800 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6}"
    wrapper = setsid_wrapper(tmp_path, token, double_fork)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    name = f"guestcpu-test-{uuid.uuid4().hex}"
    env = {**os.environ, "XDG_CACHE_HOME": str(xdg_home), "TMPDIR": str(private_tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "guestcpu.cli.main", "start", str(tcg_pin), "--qemu", str(wrapper),
                             "--", "-name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("running: QEMU pid"), (lines, proc.stderr.read() if proc.poll() else "")
        assert processes_with(name) and processes_with(token)
        proc.send_signal(signum)
        assert proc.wait(60) == status
        err = proc.stderr.read().strip().splitlines()
        assert err == [f"guestcpu: error: stopped by {signal.Signals(signum).name}; QEMU was asked to quit and is "
                       "gone"], err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_gone(name) == [] and wait_gone(token) == []
    assert list(private_tmp.iterdir()) == []  # the QMP socket folder is removed


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (/proc/PID/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_while_no_qemu_runs_is_one_line_too(signum: int, status: int) -> None:
    """Waiting on standard input (no QEMU involved): the same one line and exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "guestcpu.cli.main", "baseline", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not catches(proc.pid, signum) and time.monotonic() < deadline:  # past start-up
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signum)
        assert proc.wait(30) == status
        assert proc.stderr is not None
        assert proc.stderr.read() == f"guestcpu: error: stopped by {signal.Signals(signum).name}\n"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@needs_qemu
@pytest.mark.parametrize("double_fork", [False, True])
def test_a_wrapper_child_in_a_new_session_leaves_no_orphan(
    double_fork: bool, tcg_pin: Path, tmp_path: Path, xdg_home: Path
) -> None:
    token = f"{900 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6}"
    wrapper = setsid_wrapper(tmp_path, token, double_fork)
    done = guestcpu(["start", tcg_pin, "--verify-only", "--qemu", wrapper], {"XDG_CACHE_HOME": str(xdg_home)})
    assert done.returncode == 0, done.stderr
    assert wait_gone(token) == []


# QEMU as a wrapper sees it: the real binary, with one QMP reply replaced on its way to guestcpu.
RELAY = r"""#!{python}
import json, os, socket, subprocess, sys, threading
TARGET, BAD = {target!r}, json.loads({bad!r})
args = sys.argv[1:]
where = args.index("-qmp")
upstream = args[where + 1].removeprefix("unix:")
own = os.path.join({folder!r}, f"relay-{{os.getpid()}}.sock")
server = socket.socket(socket.AF_UNIX)
server.bind(own)
server.listen(1)
qemu = subprocess.Popen([{qemu!r}, *args[:where], "-qmp", "unix:" + own, *args[where + 2:]])
inner, _ = server.accept()
outer = socket.socket(socket.AF_UNIX)
outer.connect(upstream)
names = {{}}

def pump(src, dst, rewrite):
    # QMP is a stream of JSON objects: QEMU ends each with a newline, qemu.qmp does not.
    decoder, buffer = json.JSONDecoder(), ""
    while True:
        data = src.recv(65536)
        if not data:
            dst.close()
            return
        buffer += data.decode()
        while buffer.strip():
            try:
                message, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            if rewrite and "return" in message and names.get(json.dumps(message.get("id"))) == TARGET:
                message = {{**BAD, "id": message["id"]}}
            if not rewrite and "execute" in message:
                names[json.dumps(message.get("id"))] = message["execute"]
            dst.sendall(json.dumps(message).encode() + b"\n")

threading.Thread(target=pump, args=(outer, inner, False), daemon=True).start()
pump(inner, outer, True)
sys.exit(qemu.wait())
"""


def relay(directory: Path, target: str, bad: dict[str, Any]) -> Path:
    path = directory / f"qemu-relay-{target}"
    path.write_text(RELAY.format(python=sys.executable, target=target, bad=json.dumps(bad), qemu=QEMU,
                                 folder=str(directory)))
    path.chmod(0o755)
    return path


@needs_qemu
@pytest.mark.parametrize(("target", "bad", "says"), [
    ("query-cpu-definitions", {"return": "x"}, "QEMU's query-cpu-definitions reply is malformed"),
    ("query-machines", {"return": [{"name": 5}]}, "QEMU's query-machines reply is malformed at [0].name"),
    ("query-version", {"return": {}}, "QEMU's query-version reply is malformed"),
])
def test_a_wrongly_shaped_reply_to_the_probe_is_one_clear_error(
    target: str, bad: dict[str, Any], says: str, tmp_path: Path
) -> None:
    fake = relay(tmp_path, target, bad)
    done = guestcpu(["caps", "--qemu", fake, "--accel", "tcg", "--json"], {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert says in one_error_line(done)
    assert not list((tmp_path / "xdg" / "guestcpu").glob("qemu-*.json"))  # nothing forged is cached


@needs_qemu
@pytest.mark.parametrize(("target", "bad", "says"), [
    ("query-cpus-fast", {"return": [{"cpu-index": 0, "thread-id": 1}]}, "QEMU's query-cpus-fast reply is malformed"),
    ("query-cpus-fast", {"return": "x"}, "QEMU's query-cpus-fast reply is malformed"),
])
def test_a_wrongly_shaped_reply_to_start_is_one_clear_error(
    target: str, bad: dict[str, Any], says: str, tcg_pin: Path, tmp_path: Path, xdg_home: Path
) -> None:
    fake = relay(tmp_path, target, bad)
    done = guestcpu(["start", tcg_pin, "--verify-only", "--qemu", fake], {"XDG_CACHE_HOME": str(xdg_home)})
    assert says in one_error_line(done)


# -- 6. definitions validated when they are defined -------------------------------------------------------


@needs_qemu
@pytest.mark.parametrize(("extra", "says"), [
    ("<topology sockets='-2' cores='1' threads='1'/>", "<topology sockets='-2'> must be between 1 and 4096"),
    ("<topology sockets='0' cores='1' threads='1'/>", "<topology sockets='0'> must be between 1 and 4096"),
    ("<topology sockets='4096' cores='4096' threads='1'/>", "the <topology> gives 16777216 vCPUs"),
    ("<topology sockets='300' cores='1' threads='1'/>", "300 vCPUs but machine type pc-q35-7.2 takes at most 288"),
    ("<vendor>Foocorp</vendor>", "unknown CPU vendor 'Foocorp'"),
])
def test_nonsense_definitions_are_refused_at_define(extra: str, says: str, tmp_path: Path, xdg_home: Path) -> None:
    guest = write_guest(tmp_path, extra=extra)
    done = guestcpu(["define", guest, "--accel", "tcg", "-o", tmp_path / "pin.json"],
                    {"XDG_CACHE_HOME": str(xdg_home)})
    assert says in one_error_line(done)
    assert not (tmp_path / "pin.json").exists()


@needs_qemu
def test_pins_record_the_guest_and_refuse_another_guests_pin_without_force(tmp_path: Path, xdg_home: Path) -> None:
    env = {"XDG_CACHE_HOME": str(xdg_home)}
    pin = tmp_path / "pin.json"
    web01 = write_guest(tmp_path, "web01", UUID_A, file="web01.xml")
    web02 = write_guest(tmp_path, "web02", UUID_B, file="web02.xml")
    assert guestcpu(["define", web01, "-o", pin], env).returncode == 0
    doc = json.loads(pin.read_text())
    assert (doc["name"], doc["uuid"]) == ("web01", UUID_A)
    first = pin.read_bytes()
    line = one_error_line(guestcpu(["define", web02, "-o", pin], env))
    assert f"holds the pin of guest web01 (uuid {UUID_A}), not of guest web02" in line and "--force" in line
    assert pin.read_bytes() == first
    assert guestcpu(["define", web01, "-o", pin], env).returncode == 0  # the same guest again: fine
    assert guestcpu(["define", web02, "-o", pin, "--force"], env).returncode == 0
    assert json.loads(pin.read_text())["name"] == "web02"


@needs_qemu
def test_start_checks_the_pins_architecture(tcg_pin: Path, tmp_path: Path, xdg_home: Path) -> None:
    from dataclasses import replace

    from guestcpu.lifecycle.documents import read_pin, write_document
    from guestcpu.lifecycle.pin import pin_to_document

    pin = read_pin(str(tcg_pin))
    other = tmp_path / "s390x.pin.json"
    write_document(str(other), pin_to_document(replace(pin, abi=replace(pin.abi, arch="s390x"))))
    line = one_error_line(guestcpu(["start", other, "--verify-only"], {"XDG_CACHE_HOME": str(xdg_home)}))
    assert "the pin is for a s390x guest but QEMU" in line and "qemu-system-s390x" in line
