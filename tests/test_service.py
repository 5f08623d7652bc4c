"""``guestcpu serve`` for real (uvicorn on a free loopback port), called with its own client.

Every body must equal what the CLI command of the same name prints with ``--json``,
on SQLite and on the tests' private PostgreSQL alike.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest

from fleet_support import THREE, kinds, model_pin, pin_document, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.service.client import GuestcpuClient, ServiceError
from pg_support import PostgresServer
from service_support import RunningService, fill, running_service, serve_argv

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir = tmp_path_factory.mktemp(f"fleet-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'fleet.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database("service")
    fill(url, catalog, workdir)
    return url


@pytest.fixture(scope="module")
def service(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(db_url, tmp_path_factory.mktemp("serve"), TOKEN) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> Iterator[GuestcpuClient]:
    with GuestcpuClient(service.base_url, TOKEN) as c:
        yield c


def cli_json(db_url: str, *args: str) -> Any:
    """What ``guestcpu fleet ARGS --db URL --json`` prints."""
    from click.testing import CliRunner

    from guestcpu.cli.main import cli

    result = CliRunner().invoke(cli, ["fleet", *args, "--db", db_url, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_route_needs_the_token(service: RunningService) -> None:
    for headers in ({}, {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = httpx.get(f"{service.base_url}/v1/hosts", headers=headers, trust_env=False)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "token" in answer.json()["error"]
    with pytest.raises(ServiceError, match="401: wrong token"), \
            GuestcpuClient(service.base_url, "x" * len(TOKEN)) as wrong:
        wrong.hosts()
    spec = httpx.get(f"{service.base_url}/openapi.json", trust_env=False).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert all(op.get("security") for path in spec["paths"].values() for op in path.values())


def test_bodies_equal_the_cli_json(client: GuestcpuClient, db_url: str) -> None:
    assert client.hosts() == cli_json(db_url, "hosts")
    assert client.hosts(cluster="prod") == cli_json(db_url, "hosts", "--cluster", "prod")
    assert client.baseline(cluster="prod") == cli_json(db_url, "baseline", "--cluster", "prod")
    assert client.baseline(accel="tcg") == cli_json(db_url, "baseline", "--accel", "tcg")
    assert client.where() == cli_json(db_url, "where")
    assert client.where(("web-1",), purpose="start") == cli_json(db_url, "where", "web-1", "--purpose", "start")
    assert client.history("xeon-gold-6148") == cli_json(db_url, "history", "xeon-gold-6148")
    assert client.levels() == cli_json(db_url, "levels")
    assert client.levels(cluster="prod", accel="tcg") == \
        cli_json(db_url, "levels", "--cluster", "prod", "--accel", "tcg")
    assert client.what_if(remove=("xeon-e5-2650-v3",)) == cli_json(db_url, "what-if", "--remove", "xeon-e5-2650-v3")


def test_what_if_with_documents_equals_the_cli(client: GuestcpuClient, catalog: Catalog, db_url: str,
                                              tmp_path: Path) -> None:
    (new,) = write_captures(catalog, tmp_path, ("Xeon-Gold-6148",), variation="tsx-off")
    upgraded = new  # the same host after a microcode update that removed TSX
    over_http = client.what_if(upgrade=(("xeon-gold-6148", upgraded.read_bytes()),), remove=("core-i7-8700",))
    assert over_http == cli_json(db_url, "what-if", "--upgrade", f"xeon-gold-6148={upgraded}",
                                 "--remove", "core-i7-8700")
    assert over_http["upgraded"] == ["xeon-gold-6148"] and over_http["removed"] == ["core-i7-8700"]
    with pytest.raises(ServiceError, match="400: host xeon-gold-6148 is already in the inventory"):
        client.what_if(add=(new.read_bytes(),))
    with pytest.raises(ServiceError, match="400: say what changes"):
        client.what_if()


def test_answers_are_the_fleets(client: GuestcpuClient) -> None:
    baseline = client.baseline(cluster="prod")
    assert baseline["model"] and baseline["cluster"] == "prod"
    assert {h["host"] for h in baseline["hosts"]} == {n.lower() for n in THREE}
    placement = client.where()
    assert [p["pin"] for p in placement["pins"]] == ["db-1", "web-1"]
    for pin in placement["pins"]:
        # every host is either a destination or refused with its reasons
        assert set(pin["hosts"]) | {r["host"] for r in pin["refused"]} == {n.lower() for n in THREE}
        assert all(r["reasons"] for r in pin["refused"])


def test_pins_can_be_stored_over_http(client: GuestcpuClient, catalog: Catalog, db_url: str, tmp_path: Path) -> None:
    by_cpu = {k.cpu: k for k in kinds(catalog, ("Core-i7-8700",))}
    doc = pin_document(model_pin(by_cpu["Core-i7-8700"], "Broadwell-v2", catalog))
    stored = client.add_pin("api-1", doc, host="core-i7-8700")
    pin_file = tmp_path / "api-2.pin.json"
    pin_file.write_text(json.dumps(doc))
    by_cli = cli_json(db_url, "add-pin", str(pin_file), "--host", "core-i7-8700")
    assert stored == {**by_cli, "pin": "api-1"} and stored["replaced"] is False
    assert client.add_pin("api-1", doc)["replaced"] is True
    placed = {p["pin"]: p for p in client.where(("api-1", "api-2"))["pins"]}
    assert placed["api-2"]["runs_on"] == "core-i7-8700" and placed["api-1"]["runs_on"] is None
    assert placed["api-1"]["hosts"] == placed["api-2"]["hosts"]
    with pytest.raises(ServiceError, match="400: "):
        client.add_pin("api-3", {**doc, "fingerprint": "sha256:" + "0" * 64})


def test_pin_documents_can_be_sent(client: GuestcpuClient, catalog: Catalog) -> None:
    by_cpu = {k.cpu: k for k in kinds(catalog, ("Core-i7-8700",))}
    doc = pin_document(model_pin(by_cpu["Core-i7-8700"], "Haswell-v2", catalog))
    placement = client.where(documents=(doc,))
    assert [p["pin"] for p in placement["pins"]] == ["documents[0]"]


def test_bad_input_is_one_clear_message(client: GuestcpuClient) -> None:
    with pytest.raises(ServiceError, match="404: unknown cluster 'prd'; did you mean 'prod'"):
        client.baseline(cluster="prd")
    with pytest.raises(ServiceError, match="404: unknown pin 'web-2'"):
        client.where(("web-2",))
    with pytest.raises(ServiceError, match="404: unknown host 'nope'"):
        client.history("nope")
    with pytest.raises(ServiceError, match=r"400: documents\[0\] .*pin"):
        client.where(documents=({"schema": "something/else"},))
    with pytest.raises(ServiceError, match=r"422: query\.accel"):
        client.baseline(accel="hvf")


def test_adding_hosts_over_http(client: GuestcpuClient, catalog: Catalog, db_url: str, tmp_path: Path) -> None:
    before = client.hosts()
    with pytest.raises(ServiceError, match="400: the request body is not a guestcpu host capture"):
        client.add_host(b'{"schema": "guestcpu/pin"}', cluster="lab")
    with pytest.raises(ServiceError, match="400: the request body is empty"):
        client.add_host(b"  ")
    with pytest.raises(ServiceError, match="400: the request body is larger than a host document can be"):
        client.add_host(b"{" + b" " * (32 * 1024 * 1024) + b"}")
    assert client.hosts() == before  # nothing half-added
    (capture,) = write_captures(catalog, tmp_path, ("Xeon-Gold-6148",), variation="tsx-off")
    added = client.add_host(capture.read_bytes(), cluster="prod", tags=("rack-9",))
    assert added["replaced"] == 1 and added["hosts"][0]["host"] == "xeon-gold-6148"
    history = client.history("xeon-gold-6148")
    assert history == cli_json(db_url, "history", "xeon-gold-6148")
    assert any("no longer offers hle, rtm" in c for c in history["states"][-1]["changes"])


def test_freeze_over_http(client: GuestcpuClient, catalog: Catalog, db_url: str, tmp_path: Path) -> None:
    """Last of the module's store tests: the cluster stays frozen."""
    with pytest.raises(ServiceError, match="404: unknown cluster 'prd'"):
        client.freeze("prd")
    frozen = client.freeze("prod")
    assert frozen["cluster"] == "prod" and frozen["pin_name"] == "cluster:prod"
    assert frozen["refused"] == [] and frozen["model"] == frozen["baseline"]["model"]
    listing = client.hosts()
    assert {"name": "prod", "frozen_pin": "cluster:prod"} in listing["clusters"]
    assert listing == cli_json(db_url, "hosts")


def test_report_page_over_http(client: GuestcpuClient) -> None:
    page = client.report(cluster="prod")
    tree = lxml.html.fromstring(page)
    hosts = tree.xpath("//table[@id='heatmap']/thead//th[@class='host']")
    models = tree.xpath("//table[@id='heatmap']/tbody/tr")
    assert len(hosts) == 3 and len(models) > 20
    assert len(tree.xpath("//table[@id='heatmap']/tbody/tr/td")) == len(hosts) * len(models)
    assert tree.xpath("string(//*[@id='baseline-model'])") == client.baseline(cluster="prod")["model"]


def test_unknown_route_and_method(service: RunningService) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{service.base_url}/v1/nothing", headers=headers, trust_env=False).json() == \
        {"error": "Not Found"}
    assert httpx.delete(f"{service.base_url}/v1/hosts", headers=headers, trust_env=False).status_code == 405


# -- starting the service ------------------------------------------------------------------------
def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(serve_argv(*args), capture_output=True, text=True, timeout=120, env=env)


def serve_in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                     *args: str, token: str | None = None) -> tuple[int, str]:
    """``guestcpu serve ARGS`` through the CLI's own error handling, for refusals that come before any bind."""
    from guestcpu.cli.main import main

    monkeypatch.delenv("GUESTCPU_TOKEN", raising=False)
    if token is not None:
        monkeypatch.setenv("GUESTCPU_TOKEN", token)
    with pytest.raises(SystemExit) as exited:
        main(["serve", *args])
    return int(exited.value.code or 0), capsys.readouterr().err.strip()


def test_serve_refuses_to_start_without_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'f.db'}"
    assert serve_in_process(capsys, monkeypatch, "--db", db) == (1, (
        "guestcpu: error: no token: put one in a file given with --token-file FILE or in $GUESTCPU_TOKEN "
        "(or, on a loopback address only, run with --insecure-no-auth)"
    ))
    status, err = serve_in_process(capsys, monkeypatch, "--db", db, "--host", "0.0.0.0", "--insecure-no-auth")
    assert status == 1 and "loopback address only" in err
    status, err = serve_in_process(capsys, monkeypatch, "--db", db, token="short")
    assert status == 1 and "use at least 16" in err
    loose = tmp_path / "token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    status, err = serve_in_process(capsys, monkeypatch, "--db", db, "--token-file", str(loose))
    assert status == 1 and "chmod 600" in err
    assert not (tmp_path / "f.db").exists()  # refused before anything was opened


def test_serve_refuses_a_database_it_cannot_use(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "GUESTCPU_TOKEN": TOKEN}
    result = serve("--db", f"postgresql://nobody@/nothing?host={tmp_path}", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("guestcpu: error: cannot use database")
    assert "Traceback" not in result.stderr


def test_insecure_no_auth_on_loopback(tmp_path: Path, catalog: Catalog) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    fill(url, catalog, tmp_path)
    with running_service(url, tmp_path, None, "--insecure-no-auth") as running, \
            GuestcpuClient(running.base_url) as anonymous:
        assert {h["name"] for h in anonymous.hosts()["hosts"]} == {n.lower() for n in THREE}
        assert "NO AUTHENTICATION" in running.log_text()
