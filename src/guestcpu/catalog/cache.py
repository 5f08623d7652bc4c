"""A per-user cache of the built catalog, so a CLI call does not re-parse ~50-130 files.

The cache file is keyed by guestcpu's version and the path, size and mtime of every
source file (built-in data, drop-ins, or a libvirt cpu_map), so any change to any of
them builds a new one.  It lives in ``$XDG_CACHE_HOME/guestcpu/`` (``~/.cache``; ``/var/cache/guestcpu`` for root), is
written atomically, and a file that cannot be read is ignored and rebuilt.
Set ``GUESTCPU_NO_CATALOG_CACHE=1`` to bypass it.
"""

from __future__ import annotations

import os
import pickle
import zlib
from collections.abc import Iterable
from pathlib import Path

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.paths import cache_home, default_dropin_dirs


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


def load_catalog_cached(libvirt_dir: Path | None = None, dropin_dirs: list[Path] | None = None) -> Catalog:
    dirs = default_dropin_dirs() if dropin_dirs is None else dropin_dirs
    if os.environ.get("GUESTCPU_NO_CATALOG_CACHE"):
        from guestcpu.catalog.loader import load_catalog

        return load_catalog(libvirt_dir, dirs)
    key = _fingerprint(_source_files(libvirt_dir, dirs))
    path = cache_dir() / f"catalog-{zlib.crc32(key.encode()):08x}-{len(key):x}.pickle"
    try:
        with path.open("rb") as handle:
            cached_key, cached = pickle.load(handle)
        if cached_key == key and isinstance(cached, Catalog):
            return cached
    except (OSError, pickle.PickleError, EOFError, AttributeError, ValueError, TypeError):
        pass  # absent or unreadable: rebuild below
    # The loader (and what it imports) is needed only when the cache misses.
    from guestcpu.catalog.loader import load_catalog

    catalog = load_catalog(libvirt_dir, dirs)
    _store(path, key, catalog)
    return catalog


#: Catalog variants kept (built-in, a libvirt map or two, drop-in sets); older ones are pruned.
_KEEP = 8


def _store(path: Path, key: str, catalog: Catalog) -> None:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump((key, catalog), handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune(path.parent)
    except OSError:
        pass  # a read-only home is no reason to fail: the catalog is still returned


def _prune(directory: Path) -> None:
    entries = []
    for old in directory.glob("catalog-*.pickle"):
        try:
            entries.append((old.stat().st_mtime, old))
        except OSError:
            continue
    for _, old in sorted(entries, reverse=True)[_KEEP:]:
        old.unlink(missing_ok=True)
