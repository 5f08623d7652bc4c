"""schemathesis against ``guestcpu serve``'s own OpenAPI spec: no 500s, every answer as documented.

Bounded: a few examples per operation, against a real server on 127.0.0.1 only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.failures import FailureGroup

from fleet_support import THREE, kinds, model_pin, pin_document, write_captures
from guestcpu.catalog.catalog import Catalog
from guestcpu.service.client import GuestcpuClient, ServiceError
from pg_support import PostgresServer
from service_support import LOOPBACK, fill, running_service

#: examples per operation: enough to find a 500, few enough for two shared cores
EXAMPLES = 12
TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_schema(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{workdir / 'fleet.db'}"
    fill(url, catalog, workdir)
    with running_service(url, workdir, TOKEN) as service:
        assert service.base_url.startswith(f"http://{LOOPBACK}:")
        yield schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")


def exercise(operation: Any, calls: dict[str, int]) -> None:
    """A bounded hypothesis run of one operation, every answer checked against the spec (status, content type and,
    by response_schema_conformance, the body against its schema: the answers' schemas are typed and closed)."""
    # A document can match its JSON Schema and still be refused (a pin whose fingerprint does not
    # match its ABI, a capture of an unknown model): for bodies, a 400 is a right answer too.
    excluded = [positive_data_acceptance] if operation.body else []

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def conforms(case: Any) -> None:
        response = case.call_and_validate(headers=AUTH, excluded_checks=excluded)
        calls[operation.label] = calls.get(operation.label, 0) + 1
        assert response.status_code != 401  # the token was sent: every call reached the route

    conforms()


def test_api_conforms_to_its_spec(api_schema: Any) -> None:
    # One hypothesis run per operation (schemathesis' pytest plugin does not run on this pytest).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    calls: dict[str, int] = {}
    for operation in operations:
        exercise(operation, calls)
    print(f"schemathesis calls per operation: {calls}")
    assert set(calls) == {op.label for op in operations} and min(calls.values()) >= 2


def test_spec_lists_every_fleet_route(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/v1/hosts", "/v1/hosts/{host}/history", "/v1/pins/{pin}", "/v1/baseline", "/v1/where",
            "/v1/report", "/v1/version", "/v1/levels", "/v1/what-if", "/v1/clusters/{cluster}/freeze"} <= paths


# -- every answer as its route's schema says (the schemas come from the TypedDicts to_json() returns) -------------
class Recording(httpx.BaseTransport):
    """An HTTP transport that keeps every request with its answer."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[httpx.Request, httpx.Response]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.seen.append((request, response))
        return response

    def close(self) -> None:
        self.inner.close()


def route_of(spec: dict[str, Any], method: str, path: str) -> str:
    for template in spec["paths"]:
        if method.lower() in spec["paths"][template] and \
                re.fullmatch(re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(template)), path):
            return str(template)
    raise AssertionError(f"{method} {path}: no route of the spec")


def schema_problems(spec: dict[str, Any], method: str, template: str, response: httpx.Response) -> list[str]:
    """What in ``response`` the spec's schema for it does not allow (jsonschema over the spec's components)."""
    documented = spec["paths"][template][method.lower()]["responses"][str(response.status_code)]
    kind = response.headers["content-type"].split(";")[0]
    schema = documented["content"][kind]["schema"]
    if kind != "application/json":
        return [] if isinstance(response.text, str) and schema == {"type": "string"} else [f"{kind}: {schema}"]
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())]


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_url(request: pytest.FixtureRequest, catalog: Catalog, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database("answers")
    fill(url, catalog, tmp_path)
    return url


def test_every_answer_of_every_route_is_as_its_schema_says(fleet_url: str, catalog: Catalog, tmp_path: Path) -> None:
    by_cpu = {k.cpu: k for k in kinds(catalog, THREE)}
    pin = pin_document(model_pin(by_cpu["Core-i7-8700"], "Haswell-v2", catalog))
    (upgraded,) = write_captures(catalog, tmp_path, ("Xeon-Gold-6148",), variation="tsx-off")
    recording = Recording()
    with running_service(fleet_url, tmp_path, TOKEN) as service, \
            GuestcpuClient(service.base_url, TOKEN, transport=recording) as client:
        spec = httpx.get(f"{service.base_url}/openapi.json", trust_env=False).json()
        client.version()
        client.hosts()
        client.hosts(cluster="prod")
        client.baseline()
        client.baseline(accel="tcg")
        client.levels()
        client.where()
        client.where(("web-1",), documents=(pin,), purpose="start")
        client.what_if(remove=("xeon-e5-2650-v3",), upgrade=(("xeon-gold-6148", upgraded.read_bytes()),))
        client.what_if(remove=("core-i7-8700", "xeon-gold-6148", "xeon-e5-2650-v3"))  # no baseline after
        client.add_host(upgraded.read_bytes())
        client.history("xeon-gold-6148")
        client.add_pin("api-1", pin, host="xeon-e5-2650-v3")
        client.remove_pin("api-1")
        client.report()
        client.freeze("prod")
        client.remove_host("xeon-e5-2650-v3")
        for wrong in (lambda: client.history("nope"), lambda: client.remove_pin("cluster:prod"),
                      lambda: client.baseline(accel="hvf")):
            with pytest.raises(ServiceError):
                wrong()
    problems, answered = [], set()
    for request, response in recording.seen:
        template = route_of(spec, request.method, request.url.path)
        answered.add((request.method.lower(), template, response.status_code))
        problems += [f"{request.method} {request.url.path} {response.status_code}: {p}"
                     for p in schema_problems(spec, request.method, template, response)]
    assert problems == []
    operations = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert {(m, t) for m, t, status in answered if status == 200} == operations  # every route was asked
    assert {status for *_, status in answered} == {200, 400, 404, 422}


def test_a_key_to_json_gives_and_the_schema_lacks_is_caught(fleet_url: str, tmp_path: Path) -> None:
    """The answer schemas are closed: a key added to a to_json() but not to its TypedDict fails them,
    in this module's check and in schemathesis' response_schema_conformance alike."""
    with running_service(fleet_url, tmp_path, TOKEN) as service:
        spec = httpx.get(f"{service.base_url}/openapi.json", trust_env=False).json()
        answer = httpx.get(f"{service.base_url}/v1/hosts", headers=AUTH, trust_env=False)
        assert schema_problems(spec, "GET", "/v1/hosts", answer) == []
        # as if to_json() gave a key its TypedDict does not have
        host_schema = spec["components"]["schemas"]["HostJson"]
        del host_schema["properties"]["qemu_version"]
        host_schema["required"].remove("qemu_version")
        assert schema_problems(spec, "GET", "/v1/hosts", answer) == [
            "hosts/0: Additional properties are not allowed ('qemu_version' was unexpected)",
            "hosts/1: Additional properties are not allowed ('qemu_version' was unexpected)",
            "hosts/2: Additional properties are not allowed ('qemu_version' was unexpected)",
        ]
        drifted = schemathesis.openapi.from_dict(spec)
        drifted.config.update(base_url=service.base_url)
        operation = drifted["/v1/hosts"]["GET"]
        with pytest.raises(FailureGroup) as failures:
            operation.Case(query={}).call_and_validate(headers=AUTH)
        (failure,) = failures.value.exceptions
        assert "Additional properties are not allowed ('qemu_version' was unexpected)" in str(failure)
