"""Test-wide settings and shared fixtures; tests never write into the user's real cache directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog


@pytest.fixture(autouse=True, scope="session")
def private_cache_home() -> Iterator[None]:
    saved = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="guestcpu-test-cache-") as home:
        os.environ["XDG_CACHE_HOME"] = home
        yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The built-in catalog without any drop-ins (modules may override this fixture)."""
    return load_catalog(dropin_dirs=[])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private QEMU capabilities cache for one test module."""
    return tmp_path_factory.mktemp("caps-cache")
