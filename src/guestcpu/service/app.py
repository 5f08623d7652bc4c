"""The ASGI application (FastAPI): the fleet's answers over HTTP, with token auth.

Every route calls the same ``guestcpu.fleet.api`` function as the CLI command of the
same name and answers with that result's ``to_json()``, so a body equals what
``guestcpu fleet ... --json`` prints.  Deliberate errors (``GuestCpuError``) become
``{"error": message}`` with a 4xx status (503 when the database cannot be used);
anything else is a bug and a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from typing_extensions import TypedDict

from guestcpu import __version__
from guestcpu.catalog.catalog import Catalog
from guestcpu.errors import GuestCpuError
from guestcpu.service.auth import token_matches

#: the error body of every 4xx/5xx answer
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for status, text in (
        (400, "Bad input: what is wrong and what would be right"),
        (401, "No token, or a wrong one"),
        (404, "No such route, or no such host, cluster, pin or model"),
        (405, "Method not allowed on this route"),
        (422, "The request does not match this API"),
        (503, "The inventory database cannot be used"),
    )
}


class VersionJson(TypedDict):
    guestcpu: str


@dataclass(frozen=True)
class ServiceSettings:
    #: the inventory database URL (None: the default one, or $GUESTCPU_DB)
    db: str | None
    #: None only when started with --insecure-no-auth (on loopback)
    token: str | None
    #: the catalog the CLI would use (None: the default one, loaded at the first call)
    catalog: Catalog | None = None


class _Unauthorized(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_status(exc: GuestCpuError) -> int:
    """503: the database cannot be used; 404: a host, cluster, pin or model that does not exist; else 400."""
    from guestcpu.errors import UnknownNameError
    from guestcpu.fleet.store import StoreError

    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, UnknownNameError):  # the catalog's names and the inventory's (fleet.view.unknown)
        return 404
    return 400


BEARER = HTTPBearer(auto_error=False, description="The service's token: 'Authorization: Bearer TOKEN'")


def authorize(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
    """Every route's guard: the token, compared in constant time (none needed with --insecure-no-auth)."""
    expected = request.app.state.settings.token
    if expected is None:
        return
    if credentials is None:
        raise _Unauthorized("a token is required: send 'Authorization: Bearer TOKEN'")
    if not token_matches(expected, credentials.credentials):
        raise _Unauthorized("wrong token")


def create_app(settings: ServiceSettings, routes: Callable[[FastAPI, ServiceSettings], None] | None = None) -> FastAPI:
    """The application; ``routes`` adds the fleet's routes (default: ``guestcpu.service.routes``)."""
    app = FastAPI(
        title="guestcpu",
        version=__version__,
        description="Which CPU model every host of a fleet can give a guest, where each guest can go, and why.",
        dependencies=[Depends(authorize)],
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_request: Request, exc: _Unauthorized) -> JSONResponse:
        return _error(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(GuestCpuError)
    async def deliberate(_request: Request, exc: GuestCpuError) -> JSONResponse:
        return _error(error_status(exc), str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.get("/v1/version", summary="guestcpu's version", response_model=None,
             responses={200: {"model": VersionJson, "description": "guestcpu's version"}})
    def version() -> VersionJson:
        return {"guestcpu": __version__}

    if routes is None:
        from guestcpu.service.routes import add_fleet_routes

        routes = add_fleet_routes
    routes(app, settings)
    return app


