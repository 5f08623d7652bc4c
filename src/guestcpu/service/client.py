"""A typed client for ``guestcpu serve`` (httpx): what management software calls instead of the CLI.

Each method is one route and returns its JSON body, which is what the CLI command of
the same name prints with ``--json``.  An error answer raises ``ServiceError`` with
the service's one-line message and the HTTP status.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from guestcpu.errors import GuestCpuError

Json = dict[str, Any]


class ServiceError(GuestCpuError):
    """The service answered with an error (the message is its own)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"service answered {status}: {message}")


class GuestcpuClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport, trust_env=False)

    def __enter__(self) -> GuestcpuClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _answer(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                message = str(response.json().get("error", response.text))
            except (ValueError, AttributeError):
                message = response.text[:500]
            raise ServiceError(response.status_code, message)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def _get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._answer(self._http.get(path, params=query))

    def _post(self, path: str, body: Any, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._answer(self._http.post(path, json=body, params=query))

    def version(self) -> Json:
        result: Json = self._get("/v1/version")
        return result

    def hosts(self, *, cluster: str | None = None) -> Json:
        """``guestcpu fleet hosts --json``."""
        result: Json = self._get("/v1/hosts", cluster=cluster)
        return result

    def add_host(self, document: bytes, *, cluster: str | None = None, name: str | None = None,
                 tags: tuple[str, ...] = (), force: bool = False) -> Json:
        """``guestcpu fleet add --json`` of one capture (JSON) or domcapabilities (XML) document."""
        kind = "application/xml" if document.lstrip().startswith(b"<") else "application/json"
        query: dict[str, Any] = {k: v for k, v in (("cluster", cluster), ("name", name)) if v is not None}
        if tags:
            query["tag"] = list(tags)
        if force:
            query["force"] = "true"
        result: Json = self._answer(self._http.post("/v1/hosts", content=document, params=query,
                                                    headers={"Content-Type": kind}))
        return result

    def history(self, host: str) -> Json:
        """``guestcpu fleet history HOST --json``."""
        result: Json = self._get(f"/v1/hosts/{_segment(host)}/history")
        return result

    def add_pin(self, name: str, pin_document: Json, *, host: str | None = None) -> Json:
        """``guestcpu fleet add-pin --json``."""
        query = {"host": host} if host is not None else {}
        result: Json = self._answer(self._http.put(f"/v1/pins/{_segment(name)}", json=pin_document, params=query))
        return result

    def remove_host(self, host: str) -> Json:
        """``guestcpu fleet remove HOST --json``."""
        result: Json = self._answer(self._http.delete(f"/v1/hosts/{_segment(host)}"))
        return result

    def remove_pin(self, name: str) -> Json:
        """``guestcpu fleet remove-pin NAME --json``."""
        result: Json = self._answer(self._http.delete(f"/v1/pins/{_segment(name)}"))
        return result

    def baseline(self, *, cluster: str | None = None, accel: str = "kvm", machine: str | None = None) -> Json:
        """``guestcpu fleet baseline --json``."""
        result: Json = self._get("/v1/baseline", cluster=cluster, accel=accel, machine=machine)
        return result

    def where(self, pins: tuple[str, ...] = (), *, documents: tuple[Json, ...] = (), cluster: str | None = None,
              purpose: str = "migrate") -> Json:
        """``guestcpu fleet where --json``: stored pins by name and/or pin documents (none: every stored pin)."""
        body = {"pins": list(pins), "documents": list(documents), "cluster": cluster, "purpose": purpose}
        result: Json = self._post("/v1/where", body)
        return result

    def levels(self, *, cluster: str | None = None, accel: str = "kvm") -> Json:
        """``guestcpu fleet levels --json``."""
        result: Json = self._get("/v1/levels", cluster=cluster, accel=accel)
        return result

    def what_if(self, *, add: tuple[bytes, ...] = (), remove: tuple[str, ...] = (),
                upgrade: tuple[tuple[str, bytes], ...] = (), cluster: str | None = None, accel: str = "kvm") -> Json:
        """``guestcpu fleet what-if --json``: ``add`` documents, ``remove`` host names, ``upgrade`` (host, document)."""
        body = {
            "add": [{"document": _document(d)} for d in add], "remove": list(remove),
            "upgrade": [{"document": _document(d), "name": host} for host, d in upgrade],
            "cluster": cluster, "accel": accel,
        }
        result: Json = self._post("/v1/what-if", body)
        return result

    def freeze(self, cluster: str, *, accel: str = "kvm", machine: str | None = None) -> Json:
        """``guestcpu fleet freeze CLUSTER --json``."""
        result: Json = self._post(f"/v1/clusters/{_segment(cluster)}/freeze", None, accel=accel, machine=machine)
        return result

    def report(self, *, cluster: str | None = None, accel: str = "kvm") -> str:
        """The ``guestcpu fleet report`` page (HTML)."""
        page: str = self._get("/v1/report", cluster=cluster, accel=accel)
        return page


def _segment(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _document(data: bytes) -> Any:
    """A host document as the service takes it: a capture as its JSON object, XML as a string."""
    import json

    text = data.decode()
    return text if text.lstrip().startswith("<") else json.loads(text)
