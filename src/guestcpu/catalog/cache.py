"""A per-user cache of the built catalog, so a CLI call does not re-parse ~50-130 files.

The cache file is keyed by guestcpu's version and the path, size and mtime of every
source file (built-in data, drop-ins, or a libvirt cpu_map), so any change to any of
them builds a new one.  It lives in ``$XDG_CACHE_HOME/guestcpu/`` (``~/.cache``;
``/var/cache/guestcpu`` for root).

The file is plain JSON data (never pickle: reading a cache must not be able to run
code), checked field by field on every read; a file that fails any check is
rebuilt, never trusted.  The folder is used only when it is private
(``formats.private_dir``); otherwise the catalog is built without a cache and a
warning says why.  Set ``GUESTCPU_NO_CATALOG_CACHE=1`` to bypass it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog, Vendor
from guestcpu.catalog.paths import cache_home, trusted_dropin_dirs
from guestcpu.errors import InputError
from guestcpu.model.cpumodel import CpuidIdentity, CpuModel, ModelSignature, QemuReleases
from guestcpu.model.features import Feature

_T = TypeVar("_T")

SCHEMA = "guestcpu/catalog-cache"
FORMAT = 1


class CatalogCacheWarning(UserWarning):
    """The catalog cache folder is not safe to use (the catalog is built without it)."""


def cache_dir() -> Path:
    return cache_home()


def _fingerprint(paths: Iterable[Path]) -> str:
    """The stat facts of every source; the file name carries a checksum of it, the file the whole."""
    parts = [__version__]
    for path in paths:
        try:
            st = path.stat()
            parts.append(f"{path}\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}\0absent")
    return "\n".join(parts)


def _source_files(libvirt_dir: Path | None, dropin_dirs: list[Path]) -> list[Path]:
    if libvirt_dir is not None:
        root = libvirt_dir.resolve()
        return [root, *sorted(root.glob("*.xml"))]
    data = Path(__file__).parent / "data"
    files = [data / "features.json", data / "vendors.json", *sorted((data / "models").glob("*.json"))]
    for directory in dropin_dirs:
        files.append(directory)
        if directory.is_dir():
            files.extend(sorted(p for p in directory.iterdir() if p.suffix in (".json", ".toml")))
    return files


# -- the data form of a catalog ------------------------------------------------------


def catalog_to_data(catalog: Catalog) -> dict[str, Any]:
    """The catalog as JSON-ready rows (positional, to keep the file small and the read fast)."""
    return {
        "source": catalog.source,
        "features": [
            [f.name, f.kind, f.leaf, f.subleaf, f.register, f.bit, list(f.qemu_names), f.migratable]
            for f in catalog.features
        ],
        "vendors": [[v.name, v.string] for v in catalog.vendors],
        "models": [
            [
                m.name, m.order, m.vendor, m.features, m.removed, m.added,
                [[s.family, s.model, s.steppings] for s in m.signatures],
                m.alias_of, m.version, m.family, m.decode_host, m.decode_guest, m.compat_check, m.deprecated,
                None if m.identity is None else [
                    m.identity.vendor, m.identity.family, m.identity.model, m.identity.stepping,
                    m.identity.level, m.identity.xlevel, m.identity.model_id,
                ],
                None if m.qemu is None else [m.qemu.since, m.qemu.until], m.source, m.notes,
            ]
            for m in catalog.models
        ],
    }


class _Bad(Exception):
    """A cache file that does not have the exact shape ``catalog_to_data`` writes."""


def _shape(*fields: tuple[type, ...]) -> frozenset[tuple[type, ...]]:
    """Every exact tuple of types a row may have (one choice per field)."""
    return frozenset(itertools.product(*fields))


def _check(row: Any, shape: frozenset[tuple[type, ...]], what: str) -> list[Any]:
    # Exact types: JSON gives exactly these, and a bool is never taken for an int.
    if type(row) is not list or tuple(map(type, row)) not in shape:
        raise _Bad(f"{what}: unexpected fields {row!r:.80}")
    return row


_STR, _INT, _BOOL, _LIST, _NONE = (str,), (int,), (bool,), (list,), (type(None),)
_FEATURE = _shape(_STR, _STR, _INT, _INT, _STR, _INT, _LIST, _BOOL)
_VENDOR = _shape(_STR, _STR)
_MODEL = _shape(_STR, _INT, _STR + _NONE, _INT, _INT, _INT, _LIST, _STR + _NONE, _INT + _NONE, _STR, _BOOL, _BOOL,
                _BOOL, _BOOL, _LIST + _NONE, _LIST + _NONE, _STR, _STR)
_RELEASES = _shape(_STR, _STR + _NONE)
_IDENTITY = _shape(_STR, _INT, _INT, _INT, _INT, _INT, _STR)
_SIGNATURE = _shape(_INT, _INT, _INT + _NONE)


_FEATURE_FIELDS = tuple(f.name for f in dataclasses.fields(Feature))
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(CpuModel))
_SIGNATURE_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSignature))
_IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(CpuidIdentity))


def _make(cls: type[_T], names: tuple[str, ...], values: Iterable[Any]) -> _T:
    """An instance of a frozen dataclass from already checked values.

    The frozen ``__init__`` costs one ``object.__setattr__`` per field; over ~500
    objects that was most of a cache hit.  Filling ``__dict__`` is what ``copy`` and
    ``pickle`` do for these classes; every value was checked by ``_check`` first.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(zip(names, values, strict=True))
    return obj


def _signature(sig: Any, model: str) -> ModelSignature:
    steppings = _check(sig, _SIGNATURE, "signature")[2]
    if steppings is not None and not 0 <= steppings < 1 << 16:
        raise _Bad(f"model {model}: steppings")
    return _make(ModelSignature, _SIGNATURE_FIELDS, sig)


def catalog_from_data(data: Any) -> Catalog:
    """A catalog from ``catalog_to_data``'s form; ``_Bad`` when anything is off."""
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise _Bad("no catalog")
    rows = data.get("features")
    if not isinstance(rows, list):
        raise _Bad("no features")
    features = []
    for index, row in enumerate(rows):
        name, _kind, leaf, subleaf, _register, bit, qemu_names, migratable = _check(row, _FEATURE, "feature")
        if not all(type(q) is str for q in qemu_names) or not (0 <= bit < 64) or leaf < 0 or subleaf < 0:
            raise _Bad(f"feature {name}")
        features.append(_make(Feature, _FEATURE_FIELDS, (index, *row[:6], tuple(qemu_names), migratable)))
    vendor_rows = data.get("vendors")
    if not isinstance(vendor_rows, list):
        raise _Bad("no vendors")
    vendors = tuple(Vendor(*_check(row, _VENDOR, "vendor")) for row in vendor_rows)
    model_rows = data.get("models")
    if not isinstance(model_rows, list):
        raise _Bad("no models")
    all_bits = (1 << len(features)) - 1
    models = []
    # Versions of one family share signatures and identities: each distinct one is checked and built once.
    signature_sets: dict[str, tuple[ModelSignature, ...]] = {}
    identities: dict[tuple[Any, ...], CpuidIdentity] = {}
    for row in model_rows:
        fields = _check(row, _MODEL, "model")
        if not (0 <= fields[3] <= all_bits and 0 <= fields[4] <= all_bits and 0 <= fields[5] <= all_bits):
            raise _Bad(f"model {fields[0]}: features outside the catalog")
        key = repr(fields[6])
        signatures = signature_sets.get(key)
        if signatures is None:
            signatures = signature_sets[key] = tuple(_signature(sig, fields[0]) for sig in fields[6])
        identity = None
        if fields[14] is not None:
            ident_key = tuple(_check(fields[14], _IDENTITY, "identity"))
            identity = identities.get(ident_key)
            if identity is None:
                identity = identities[ident_key] = _make(CpuidIdentity, _IDENTITY_FIELDS, ident_key)
        try:
            releases = None if fields[15] is None else QemuReleases(*_check(fields[15], _RELEASES, "releases"))
        except ValueError as exc:
            raise _Bad(f"model {fields[0]}: {exc}") from None
        models.append(_make(CpuModel, _MODEL_FIELDS, (*fields[:6], signatures, *fields[7:14], identity,
                                                       releases, *fields[16:])))
    return Catalog(tuple(features), vendors, tuple(models), data["source"])


# -- the cache -------------------------------------------------------------------------


def _warn(message: str) -> None:
    warnings.warn(message, CatalogCacheWarning, stacklevel=3)


def load_catalog_cached(libvirt_dir: Path | None = None, dropin_dirs: list[Path] | None = None) -> Catalog:
    dirs = trusted_dropin_dirs() if dropin_dirs is None else dropin_dirs
    if os.environ.get("GUESTCPU_NO_CATALOG_CACHE"):
        return _build(libvirt_dir, dirs)
    key = _fingerprint(_source_files(libvirt_dir, dirs))
    name = f"catalog-{zlib.crc32(key.encode()):08x}-{len(key):x}.json"
    from guestcpu.formats.private_dir import UnsafeDirectoryError, open_private_dir

    directory = cache_dir()
    try:
        dir_fd = open_private_dir(directory, create=False)
    except FileNotFoundError:
        dir_fd = None
    except UnsafeDirectoryError as exc:
        _warn(str(exc))
        return _build(libvirt_dir, dirs)
    except OSError:
        dir_fd = None
    try:
        if dir_fd is not None:
            cached = _read(dir_fd, name, key)
            if cached is not None:
                return cached
        catalog = _build(libvirt_dir, dirs)
        if dir_fd is None:
            try:
                dir_fd = open_private_dir(directory, create=True)
            except UnsafeDirectoryError as exc:
                _warn(str(exc))
                return catalog
            except OSError:
                return catalog  # a read-only home is no reason to fail: the catalog is still returned
        _store(dir_fd, name, key, catalog)
        return catalog
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _build(libvirt_dir: Path | None, dirs: list[Path]) -> Catalog:
    # The loader (and what it imports) is needed only when the cache misses.
    from guestcpu.catalog.loader import load_catalog

    return load_catalog(libvirt_dir, dirs)


def _read(dir_fd: int, name: str, key: str) -> Catalog | None:
    from guestcpu.formats.files import loads_json, open_regular, read_fd

    try:
        fd = open_regular(name, "the catalog cache", dir_fd=dir_fd, follow=False)
    except InputError:
        return None  # absent, a symlink, a FIFO…: rebuilt and replaced below
    try:
        doc = loads_json(read_fd(fd, name, "the catalog cache"), name, "the catalog cache")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("format") != FORMAT:
            return None
        if doc.get("key") != key:
            return None
        return catalog_from_data(doc.get("catalog"))
    except (InputError, OSError, _Bad, TypeError, ValueError):
        return None  # corrupt or foreign: rebuilt, never trusted
    finally:
        os.close(fd)


#: Catalog variants kept (built-in, a libvirt map or two, drop-in sets); older ones are pruned.
_KEEP = 8


def _store(dir_fd: int, name: str, key: str, catalog: Catalog) -> None:
    from guestcpu.formats.files import PRIVATE_MODE, write_at

    doc = {"schema": SCHEMA, "format": FORMAT, "key": key, "catalog": catalog_to_data(catalog)}
    try:
        write_at(dir_fd, name, json.dumps(doc, separators=(",", ":")).encode(), PRIVATE_MODE)
        _prune(dir_fd)
    except OSError:
        pass  # a full or read-only disk is no reason to fail: the catalog is still returned


def _prune(dir_fd: int) -> None:
    entries = []
    for entry in os.scandir(dir_fd):
        if entry.name.startswith("catalog-") and entry.name.endswith((".json", ".pickle")):
            with contextlib.suppress(OSError):
                entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    for _, old in sorted(entries, reverse=True)[_KEEP:]:
        with contextlib.suppress(OSError):
            os.unlink(old, dir_fd=dir_fd)
    # Caches of older guestcpu versions were pickles: never read, removed here.
    for entry in os.scandir(dir_fd):
        if entry.name.startswith("catalog-") and entry.name.endswith(".pickle"):
            with contextlib.suppress(OSError):
                os.unlink(entry.name, dir_fd=dir_fd)
