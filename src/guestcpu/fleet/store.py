"""Where the inventory lives: a SQLite file by default, PostgreSQL for large fleets (I/O).

``open_store`` connects, creates the schema of a new database (Alembic, run in-process
from the migrations shipped in the package) and refuses a database of another schema
revision with one message that says what to run.  Every command works inside one
``Store.transaction()``: it commits whole or not at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from guestcpu.errors import GuestCpuError
from guestcpu.fleet.schema import SCHEMA_REVISION
from guestcpu.formats.private_dir import file_problem, folder_problem

ENV_DB = "GUESTCPU_DB"


class StoreError(GuestCpuError):
    """The inventory database cannot be used as it is (unreachable, another schema, damaged)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # drivers' messages span lines; ours are one


def data_home() -> Path:
    """``$XDG_DATA_HOME/guestcpu`` (``~/.local/share/guestcpu``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "guestcpu"


def default_url() -> str:
    return os.environ.get(ENV_DB) or f"sqlite:///{data_home() / 'fleet.db'}"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver guestcpu depends on)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "guestcpu.fleet:migrations")
    config.attributes["connection"] = connection
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@dataclass
class Store:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back whole on any error."""
        session = self.sessions()
        try:
            with session.begin():
                yield session
        except DBAPIError as exc:
            raise StoreError(f"database {describe(self.url)}: {exc.orig}; nothing was changed") from None
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()


def _check_private_file(path: Path, url: str) -> None:
    """A SQLite inventory is trusted like a cache: nobody else may write its folder or the file."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    where, problem = path.parent, folder_problem(path.parent.stat())
    if problem is None and path.is_symlink():
        where, problem = path, "it is a symbolic link"
    elif problem is None and path.exists():
        where, problem = path, file_problem(path.stat())
    if problem is not None:
        raise StoreError(
            f"database {describe(url)} is not safe to use: {where}: {problem}; keep it in a folder that is yours "
            "and not group/other-writable"
        )


def _json_text(value: Any) -> str:
    """JSON columns written by the fast encoder (a fleet add writes thousands of rows); what it cannot
    encode (an integer beyond 64 bits) by the standard one."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _engine(url: str) -> Engine:
    full = normalize_url(url)
    try:
        parsed = make_url(full)
    except ArgumentError:
        raise StoreError(
            f"'{url}' is not a database URL; use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"database {describe(url)}: only SQLite and PostgreSQL are supported")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _check_private_file(Path(parsed.database), url)
    try:
        engine = create_engine(full, json_serializer=_json_text, json_deserializer=orjson.loads)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"database {describe(url)}: no driver ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def current_revision(engine: Engine) -> tuple[str | None, bool]:
    """(the database's Alembic revision, whether it has any tables at all)."""
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" not in tables:
            return None, bool(tables)
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        return (str(row[0]) if row else None), True


def known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    with_none = _alembic_config(None)
    return [rev.revision for rev in ScriptDirectory.from_config(with_none).walk_revisions()]


def upgrade(engine: Engine) -> None:
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


def open_store(url: str | None = None, *, migrate: bool = False) -> Store:
    """Connect to the inventory; a new database gets the schema, an older one needs ``migrate=True``."""
    url = url or default_url()
    engine = _engine(url)
    where = describe(url)
    try:
        revision, has_tables = current_revision(engine)
        if revision != SCHEMA_REVISION:
            if revision is None and has_tables:
                raise StoreError(f"database {where} has tables but no guestcpu fleet schema; use another database")
            if revision is not None and revision not in known_revisions():
                raise StoreError(
                    f"database {where} has fleet schema revision {revision!r}, unknown to this guestcpu "
                    f"(it needs {SCHEMA_REVISION!r}): it was made by a newer guestcpu"
                )
            if revision is not None and not migrate:
                raise StoreError(
                    f"database {where} has fleet schema revision {revision!r}, older than {SCHEMA_REVISION!r}; "
                    f"run 'guestcpu fleet migrate --db {where}' to upgrade it"
                )
            upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = getattr(exc, "orig", None) or exc
        raise StoreError(f"cannot use database {where}: {reason}".rstrip()) from None
    except StoreError:
        engine.dispose()
        raise
    return Store(url, engine, sessionmaker(engine, expire_on_commit=False))
