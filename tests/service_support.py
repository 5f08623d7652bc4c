"""``guestcpu serve`` run for real by the tests: a uvicorn server on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fleet_support import THREE, kinds, model_pin, write_captures
from guestcpu.catalog.catalog import Catalog

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningService:
    base_url: str
    token: str | None
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "guestcpu.cli.main", "serve", *args]


@contextmanager
def running_service(db_url: str, workdir: Path, token: str | None, *extra: str) -> Iterator[RunningService]:
    """Start ``guestcpu serve`` on 127.0.0.1 and a free port; stop it (SIGINT, as a user would) at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("GUESTCPU_TOKEN", "GUESTCPU_DB")}
    args = ["--host", LOOPBACK, "--db", db_url, *extra]
    if token is not None:
        token_file = workdir / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        args += ["--token-file", str(token_file)]
    for _attempt in range(3):  # the port may be taken between free_port() and the bind
        port = free_port()
        log = workdir / f"serve-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(serve_argv(*args, "--port", str(port)), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env)
        service = RunningService(f"http://{LOOPBACK}:{port}", token, process, log)
        try:
            if _wait_ready(service):
                yield service
                return
        finally:
            _stop(process)
    raise RuntimeError(f"guestcpu serve did not start:\n{service.log_text()}")


def _wait_ready(service: RunningService) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            if "address already in use" in service.log_text().lower():
                return False
            raise RuntimeError(f"guestcpu serve exited {service.process.returncode}:\n{service.log_text()}")
        try:
            httpx.get(f"{service.base_url}/openapi.json", timeout=2, trust_env=False)
            return True
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"guestcpu serve not answering after {START_TIMEOUT_S:.0f} s:\n{service.log_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def fill(url: str, catalog: Catalog, workdir: Path) -> None:
    """Three real CPUs of the corpus in cluster 'prod', and two guests on the Core i7: web-1 (Haswell) can
    move to the Xeon Gold, db-1 (Skylake-Client) nowhere else: it is stranded."""
    from guestcpu.fleet import api

    store = api.open_store(url)
    try:
        paths = write_captures(catalog, workdir)
        api.add_hosts(store, [(str(p), p.read_bytes(), None) for p in paths], catalog, cluster="prod")
        by_cpu = {k.cpu: k for k in kinds(catalog, THREE)}
        api.add_pin(store, "db-1", model_pin(by_cpu["Core-i7-8700"], "Skylake-Client-v3", catalog),
                    host="core-i7-8700")
        api.add_pin(store, "web-1", model_pin(by_cpu["Core-i7-8700"], "Haswell-v2", catalog), host="core-i7-8700")
    finally:
        store.close()
