"""schemathesis against ``guestcpu serve``'s own OpenAPI spec: no 500s, every answer as documented.

Bounded: a few examples per operation, against a real server on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from guestcpu.catalog.catalog import Catalog
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
    """A bounded hypothesis run of one operation, every answer checked against the spec."""
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
