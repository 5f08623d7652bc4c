"""Test-wide settings and shared fixtures; tests never write into the user's real cache directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import browser_support
import pg_support
from browser_support import Chromium
from guestcpu.catalog.catalog import Catalog
from guestcpu.catalog.loader import load_catalog
from pg_support import PostgresServer


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


# Real servers, started by the tests themselves (tests/pg_support.py, tests/browser_support.py).

@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on a unix socket in a temporary folder, for the whole session."""
    reason = pg_support.unavailable_reason()
    if reason is not None:
        print(f"\nskipping PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with pg_support.running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a new, empty PostgreSQL database (postgresql+psycopg://...?host=/tmp/...)."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium; each call runs a fresh browser with an empty profile."""
    reason = browser_support.unavailable_reason()
    if reason is not None:
        print(f"\nskipping browser tests: {reason}")
        pytest.skip(reason)
    binary = browser_support.chromium_binary()
    assert binary is not None
    return Chromium(binary)


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every fleet store test runs against SQLite (a file) and PostgreSQL (the private server) both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
