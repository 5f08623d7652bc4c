"""The fleet's routes: each one is a ``guestcpu.fleet.api`` function, its body that result's ``to_json()``.

The store and the catalog are opened once when the application starts and shared by
every request (each API call is its own transaction).  Request bodies are parsed
here, where they arrive, into exactly what the API takes; the API does the rest, as
it does for the CLI.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import InputError
from guestcpu.service.app import ServiceSettings

#: the largest host document accepted (a capture of a host is a few hundred KiB)
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
NAME = r"^[^\x00-\x1f\x7f]{1,200}$"


class JsonAnswer(JSONResponse):
    """A ``to_json()`` body, serialized once by orjson.

    Returned as a response, it skips FastAPI's own encoder, which walks the body in Python
    (a 12.6 MB where: 2 s by that encoder, 41 ms through a pydantic response model, 9 ms by orjson).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def answers(shape: Any) -> dict[str, Any]:
    """A route's 200 answer, documented by the TypedDict its result's ``to_json()`` returns.

    That TypedDict is the shape's one definition: mypy holds ``to_json()`` to it, pydantic
    turns it into the OpenAPI schema.  The body is the plain ``to_json()`` (``JsonAnswer``):
    no response model re-validates it.
    """
    return {"response_model": None, "response_class": JsonAnswer,
            "responses": {200: {"model": shape, "description": "The answer: what 'guestcpu fleet ... --json' "
                                "prints"}}}


def closed_objects(schemas: dict[str, Any]) -> None:
    """Every answer object has exactly its documented keys: a key added to ``to_json()`` and not to
    its TypedDict fails the schema (tests check real answers against it)."""
    for schema in schemas.values():
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)

ClusterQuery = Annotated[str | None, Query(pattern=NAME, description="Only this cluster (default: every host).")]
AccelQuery = Annotated[Literal["kvm", "tcg"], Query(description="The accelerator the guests run under.")]


def _pin_schema() -> dict[str, Any]:
    """The pin document's JSON Schema (guestcpu schema pin), as an OpenAPI 3.1 schema."""
    from guestcpu.schemas import schema

    return {k: v for k, v in schema("pin").items() if k not in ("$schema", "$id")}


class WhereRequest(BaseModel):
    """Guests to place: stored pins by name and/or pin documents (none given: every stored pin)."""

    model_config = ConfigDict(extra="forbid")
    pins: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list, description="Names of stored pins.")
    documents: list[dict[str, Any]] = Field(
        default_factory=list, description="Pin documents ('guestcpu define').",
        json_schema_extra={"items": {"$ref": "#/components/schemas/Pin"}},
    )
    cluster: Annotated[str, Field(pattern=NAME)] | None = None
    purpose: Literal["migrate", "restore", "start"] = "migrate"


class HostDocument(BaseModel):
    """One host as a capture document (a JSON object) or libvirt domcapabilities XML (a string)."""

    model_config = ConfigDict(extra="forbid")
    document: dict[str, Any] | str = Field(description="A 'guestcpu capture' document, or 'virsh domcapabilities' XML.")
    name: Annotated[str, Field(pattern=NAME)] | None = Field(
        default=None, description="The host's name (default: the document's; needed for XML). For an upgrade: "
        "the host it upgrades.")

    def as_input(self, source: str) -> tuple[str, bytes, str | None]:
        data = self.document.encode() if isinstance(self.document, str) else json.dumps(self.document).encode()
        return source, data, self.name


class WhatIfRequest(BaseModel):
    """Hosts added, retired or upgraded, on paper (nothing is stored)."""

    model_config = ConfigDict(extra="forbid")
    add: list[HostDocument] = Field(default_factory=list)
    remove: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list, description="Hosts to retire.")
    upgrade: list[HostDocument] = Field(default_factory=list, description="Hosts' states after an upgrade "
                                        "('name' says which host).")
    cluster: Annotated[str, Field(pattern=NAME)] | None = None
    accel: Literal["kvm", "tcg"] = "kvm"


class _State:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._store: Any = None
        self._catalog: Catalog | None = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from guestcpu.fleet.api import open_store

            self._store = open_store(self.settings.db)
        return self._store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from guestcpu.catalog.cache import load_catalog_cached

            self._catalog = self.settings.catalog or load_catalog_cached()
        return self._catalog

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


async def _document(request: Request) -> bytes:
    """The request body, read no further than ``MAX_DOCUMENT_BYTES``."""
    too_big = InputError(f"the request body is larger than a host document can be ({MAX_DOCUMENT_BYTES} bytes)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise too_big
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        raise InputError("the request body is empty: send a 'guestcpu capture' document (JSON) "
                         "or 'virsh domcapabilities' XML")
    return data


def add_fleet_routes(app: FastAPI, settings: ServiceSettings) -> None:
    from guestcpu.fleet import api

    state = _State(settings)
    parent = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with parent(app_) as inner:
            try:
                await run_in_threadpool(lambda: state.store)  # opened once, before the first request
                yield inner
            finally:
                state.close()

    app.router.lifespan_context = lifespan
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = plain_openapi()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            closed_objects(schemas)
            schemas["Pin"] = _pin_schema()
            # the pin document has its own JSON Schema (guestcpu schema pin): the frozen CPU is one
            schemas["FrozenJson"]["properties"]["pin"] = {"$ref": "#/components/schemas/Pin"}
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/v1/hosts", summary="The hosts of the inventory ('guestcpu fleet hosts --json')",
             **answers(api.HostListJson))
    def hosts(cluster: ClusterQuery = None) -> JsonAnswer:
        return JsonAnswer(api.hosts(state.store, cluster=cluster).to_json())

    @app.post(
        "/v1/hosts", summary="Add or replace a host ('guestcpu fleet add --json')",
        description="The body is one 'guestcpu capture' document (application/json) or libvirt "
        "'virsh domcapabilities' XML (application/xml). All or nothing: a refused host changes nothing.",
        **answers(api.AddReportJson),
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/xml": {"schema": {"type": "string"}},
        }}},
    )
    async def add_host(
        request: Request,
        cluster: ClusterQuery = None,
        name: Annotated[str | None, Query(pattern=NAME, description="Host name (default: the document's).")] = None,
        tag: Annotated[list[Annotated[str, Query(pattern=NAME)]] | None, Query(description="Tags.")] = None,
        force: Annotated[bool, Query(description="Add a host that cannot give its frozen cluster's CPU, "
                                     "marked non-operational.")] = False,
    ) -> JsonAnswer:
        data = await _document(request)

        def work() -> JsonAnswer:
            report = api.add_hosts(state.store, [("the request body", data, name)], state.catalog,
                                   cluster=cluster, tags=tuple(tag or ()), force=force)
            return JsonAnswer(report.to_json())

        return await run_in_threadpool(work)

    @app.get("/v1/hosts/{host}/history", summary="What changed on a host, and when ('guestcpu fleet history --json')",
             **answers(api.HistoryJson))
    def history(host: Annotated[str, Path(pattern=NAME)]) -> JsonAnswer:
        return JsonAnswer(api.history(state.store, host).to_json())

    @app.delete("/v1/hosts/{host}", summary="Retire a host ('guestcpu fleet remove --json')",
                description="Its history goes with it; its guests' pins stay, with no host; a cluster left with "
                "no host is removed unless it is frozen.", **answers(api.HostsRemovedJson))
    def remove_host(host: Annotated[str, Path(pattern=NAME)]) -> JsonAnswer:
        return JsonAnswer(api.remove_hosts(state.store, [host]).to_json())

    @app.put("/v1/pins/{pin}", summary="Store a guest's pin ('guestcpu fleet add-pin --json')",
             **answers(api.PinAddedJson),
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/Pin"}}}}})
    def add_pin(
        pin: Annotated[str, Path(pattern=NAME)],
        document: Annotated[dict[str, Any], Body(description="A pin document ('guestcpu define').")],
        host: Annotated[str | None, Query(pattern=NAME, description="The host the guest runs on.")] = None,
    ) -> JsonAnswer:
        from guestcpu.lifecycle.pin import pin_from_document

        parsed = pin_from_document(document, "the request body")
        return JsonAnswer(api.add_pin(state.store, pin, parsed, host=host).to_json())

    @app.delete("/v1/pins/{pin}", summary="Forget a guest's pin ('guestcpu fleet remove-pin --json')",
                **answers(api.PinsRemovedJson))
    def remove_pin(pin: Annotated[str, Path(pattern=NAME)]) -> JsonAnswer:
        return JsonAnswer(api.remove_pins(state.store, [pin]).to_json())

    @app.get("/v1/baseline", summary="The best CPU every host can give ('guestcpu fleet baseline --json')",
             **answers(api.BaselineJson))
    def baseline(
        cluster: ClusterQuery = None, accel: AccelQuery = "kvm",
        machine: Annotated[str | None, Query(pattern=NAME, description="Machine type to verify on.")] = None,
    ) -> JsonAnswer:
        return JsonAnswer(
            api.baseline(state.store, state.catalog, cluster=cluster, accel=accel, machine=machine).to_json())

    @app.post("/v1/where", summary="Which hosts can take each guest, and what stops the others "
              "('guestcpu fleet where --json')", **answers(api.PlacementJson))
    def where(request: WhereRequest) -> JsonAnswer:
        files = [(f"documents[{i}]", doc) for i, doc in enumerate(request.documents)]
        return JsonAnswer(api.where(state.store, request.pins, files=files, cluster=request.cluster,
                                    purpose=request.purpose).to_json())

    @app.get("/v1/levels", summary="The x86-64 level each host can give, and which guest OS runs where "
             "('guestcpu fleet levels --json')", **answers(api.LevelsJson))
    def levels(cluster: ClusterQuery = None, accel: AccelQuery = "kvm") -> JsonAnswer:
        return JsonAnswer(api.levels(state.store, state.catalog, cluster=cluster, accel=accel).to_json())

    @app.post("/v1/what-if", summary="How the baseline changes and which guests get stranded if hosts are added, "
              "retired or upgraded ('guestcpu fleet what-if --json')", **answers(api.WhatIfJson))
    def what_if(request: WhatIfRequest) -> JsonAnswer:
        if not (request.add or request.remove or request.upgrade):
            raise InputError("say what changes: 'add' hosts, 'remove' hosts or 'upgrade' hosts")
        if any(item.name is None for item in request.upgrade):
            raise InputError("an 'upgrade' entry needs the 'name' of the host it upgrades")
        return JsonAnswer(api.what_if(
            state.store, state.catalog,
            add=[item.as_input(f"add[{i}]") for i, item in enumerate(request.add)], remove=request.remove,
            upgrade=[item.as_input(f"upgrade[{i}]") for i, item in enumerate(request.upgrade)],
            cluster=request.cluster, accel=request.accel,
        ).to_json())

    @app.post("/v1/clusters/{cluster}/freeze", summary="Fix the cluster's CPU, like EVC "
              "('guestcpu fleet freeze --json')", **answers(api.FrozenJson))
    def freeze(
        cluster: Annotated[str, Path(pattern=NAME)], accel: AccelQuery = "kvm",
        machine: Annotated[str | None, Query(pattern=NAME, description="The cluster CPU's machine type.")] = None,
    ) -> JsonAnswer:
        return JsonAnswer(api.freeze(state.store, state.catalog, cluster, accel=accel, machine=machine).to_json())

    @app.get("/v1/report", summary="The fleet report page ('guestcpu fleet report')", response_class=HTMLResponse)
    def report(cluster: ClusterQuery = None, accel: AccelQuery = "kvm") -> HTMLResponse:
        from guestcpu.fleet.report import fleet_report, render_report

        return HTMLResponse(render_report(fleet_report(state.store, state.catalog, cluster=cluster, accel=accel)))
