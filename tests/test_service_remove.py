"""Retiring hosts and forgetting pins over HTTP (a real ``guestcpu serve``), and which errors are a 404.

Each backend gets two identical inventories: one changed over HTTP, its twin by the CLI;
every body must equal what the CLI printed with ``--json``, and the twins stay equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guestcpu.catalog.catalog import Catalog
from guestcpu.service.client import GuestcpuClient, ServiceError
from pg_support import PostgresServer
from service_support import fill, running_service

TOKEN = "remove-token-0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(request: pytest.FixtureRequest, catalog: Catalog, tmp_path: Path) -> tuple[str, str]:
    urls = []
    for twin in ("http", "cli"):
        workdir = tmp_path / twin
        workdir.mkdir()
        if request.param == "sqlite":
            url = f"sqlite:///{workdir / 'fleet.db'}"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            url = server.new_database(f"remove_{twin}")
        fill(url, catalog, workdir)
        urls.append(url)
    return urls[0], urls[1]


@pytest.fixture
def client(twins: tuple[str, str], tmp_path: Path) -> Iterator[GuestcpuClient]:
    with running_service(twins[0], tmp_path, TOKEN) as service, GuestcpuClient(service.base_url, TOKEN) as c:
        yield c


def cli_json(db_url: str, *args: str) -> Any:
    from click.testing import CliRunner

    from guestcpu.cli.main import cli

    result = CliRunner().invoke(cli, ["fleet", *args, "--db", db_url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_remove_over_http_equals_the_cli(client: GuestcpuClient, twins: tuple[str, str],
                                         catalog: Catalog) -> None:
    _, cli_db = twins
    before = client.hosts()
    with pytest.raises(ServiceError, match="404: unknown host 'xeon-gold-614'; did you mean 'xeon-gold-6148'"):
        client.remove_host("xeon-gold-614")
    with pytest.raises(ServiceError, match="404: unknown pin 'web1'; did you mean 'web-1'"):
        client.remove_pin("web1")
    assert client.hosts() == before
    assert client.remove_pin("web-1") == cli_json(cli_db, "remove-pin", "web-1")
    removed = client.remove_host("core-i7-8700")
    assert removed == cli_json(cli_db, "remove", "core-i7-8700")
    assert removed["removed"][0]["pins_unplaced"] == ["db-1"] and removed["history_kept"] is False
    with pytest.raises(ServiceError, match="404: unknown host 'core-i7-8700'"):
        client.history("core-i7-8700")
    assert [(p["pin"], p["runs_on"]) for p in client.where()["pins"]] == [("db-1", None)]
    assert client.hosts() == cli_json(cli_db, "hosts")
    assert client.where() == cli_json(cli_db, "where")
    # a cluster's frozen CPU is not a guest's pin: bad input, not a missing thing
    assert client.freeze("prod") == cli_json(cli_db, "freeze", "prod")
    with pytest.raises(ServiceError, match="400: pin cluster:prod is the frozen CPU of cluster prod"):
        client.remove_pin("cluster:prod")
    last = client.remove_host("xeon-gold-6148")
    assert client.remove_host("xeon-e5-2650-v3")["clusters_kept_empty"] == ["prod"]
    assert last == cli_json(cli_db, "remove", "xeon-gold-6148")
    assert client.hosts() == {"hosts": [], "clusters": [{"name": "prod", "frozen_pin": "cluster:prod"}]}


def test_only_unknown_names_are_a_404(catalog: Catalog) -> None:
    """404 is for a host, cluster, pin or model that does not exist (``UnknownNameError``), whatever
    the message says; other bad input is a 400 even when its message starts with 'unknown'."""
    import asyncio

    import httpx
    from fastapi import FastAPI

    from guestcpu.errors import InputError
    from guestcpu.fleet.store import StoreError
    from guestcpu.fleet.view import FleetView
    from guestcpu.service.app import ServiceSettings, create_app

    empty = FleetView((), {})
    raising = {
        "host": lambda: empty.host("h1"),
        "cluster": lambda: empty.in_cluster("c1"),
        "pin": lambda: empty.pins_named(["p1"]),
        "model": lambda: catalog.model("Skylake-Clinet"),
        "other": lambda: (_ for _ in ()).throw(InputError("unknown accelerator 'hvf'; expected kvm or tcg")),
        "store": lambda: (_ for _ in ()).throw(StoreError("database x: gone")),
    }

    def routes(app: FastAPI, _settings: ServiceSettings) -> None:
        @app.get("/v1/raise/{what}")
        def fail(what: str) -> None:
            raising[what]()

    async def ask_all() -> dict[str, httpx.Response]:
        app = create_app(ServiceSettings(db=None, token=None), routes)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
            return {what: await http.get(f"/v1/raise/{what}") for what in raising}

    answers = asyncio.run(ask_all())
    assert {what: a.status_code for what, a in answers.items()} == \
        {"host": 404, "cluster": 404, "pin": 404, "model": 404, "other": 400, "store": 503}
    assert answers["host"].json() == {"error": "unknown host 'h1'; the inventory has no hosts yet"}
    assert answers["model"].json()["error"].startswith("unknown CPU model 'Skylake-Clinet'; did you mean")
    assert answers["other"].json() == {"error": "unknown accelerator 'hvf'; expected kvm or tcg"}
