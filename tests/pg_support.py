"""A private PostgreSQL server for the test session (Debian's ``postgresql`` package).

CI starts nothing for us, so the tests start their own server: ``initdb`` in a fresh
temporary folder, listening only on a unix socket in that folder (no TCP port at all),
``fsync`` off (the data is thrown away), stopped and deleted at the end. PostgreSQL
refuses to run as root, so when the tests run as root the server runs as the
unprivileged user ``guestcpu-test`` (created with ``useradd`` when missing).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "guestcpu-test"
SUPERUSER = "guestcpu"
START_TIMEOUT_S = 60.0


def postgres_bindir() -> Path | None:
    """Debian's newest installed server (``/usr/lib/postgresql/<major>/bin``), else one on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def unavailable_reason() -> str | None:
    """Why the server cannot be had here, or None. Only a non-root run without the package skips."""
    if postgres_bindir() is not None:
        return None
    if os.geteuid() != 0:
        return "PostgreSQL is not installed and the tests do not run as root ('make test' installs it)"
    raise RuntimeError("PostgreSQL is not installed: run 'make test' (it installs Debian's postgresql)")


def _server_account() -> pwd.struct_passwd:
    """The account the server runs as: ourselves, or ``guestcpu-test`` when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


@dataclass
class PostgresServer:
    """A running private server; :meth:`new_database` hands each test an empty database."""

    root: Path
    bindir: Path
    process: subprocess.Popen[bytes]
    account: pwd.struct_passwd
    _counter: itertools.count[int]

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) over the unix socket."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database, "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return result.stdout.strip()

    def new_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its URL."""
        name = f"{prefix}_{next(self._counter)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _run_as(account: pwd.struct_passwd, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    as_other = os.geteuid() != account.pw_uid
    return subprocess.run(
        argv, check=True, capture_output=True, text=True,
        user=account.pw_uid if as_other else None, group=account.pw_gid if as_other else None,
        extra_groups=[] if as_other else None, env=_server_env(account), **kwargs,
    )


def _server_env(account: pwd.struct_passwd) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
            "HOME": "/nonexistent" if os.geteuid() == 0 else os.environ.get("HOME", "/tmp"),
            "USER": account.pw_name}


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private server, yield it, stop it and delete its folder."""
    bindir = postgres_bindir()
    assert bindir is not None
    account = _server_account()
    # Directly under /tmp: short enough for a unix socket path (108 bytes), and not
    # inside a root-only pytest folder the server user could not enter.
    root = Path(tempfile.mkdtemp(prefix="guestcpu-pg-", dir="/tmp"))
    process: subprocess.Popen[bytes] | None = None
    try:
        (root / "socket").mkdir(mode=0o700)
        (root / "data").mkdir(mode=0o700)
        for path in (root, root / "socket", root / "data"):
            os.chown(path, account.pw_uid, account.pw_gid)
        root.chmod(0o700)
        try:
            _run_as(account, [str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER,
                              "--auth=trust", "--encoding=UTF8", "--no-sync"], timeout=120)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr}") from exc
        log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the process
        as_other = os.geteuid() != account.pw_uid
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(root / "data"), "-k", str(root / "socket"),
             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=account.pw_uid if as_other else None, group=account.pw_gid if as_other else None,
            extra_groups=[] if as_other else None, env=_server_env(account), start_new_session=True,
        )
        log.close()
        server = PostgresServer(root, bindir, process, account, itertools.count(1))
        _wait_ready(server)
        yield server
    finally:
        if process is not None:
            PostgresServer(root, bindir, process, account, itertools.count()).stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited at start-up:\n{server.log_file.read_text(errors='replace')}")
        ready = subprocess.run(
            [str(server.bindir / "pg_isready"), "-q", "-h", str(server.socket_dir), "-U", SUPERUSER],
            capture_output=True, timeout=30,
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL not ready after {START_TIMEOUT_S:.0f} s:\n"
                               f"{server.log_file.read_text(errors='replace')}")
        time.sleep(0.1)
