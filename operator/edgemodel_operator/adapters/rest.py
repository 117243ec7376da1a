"""Requests to the Kubernetes API by path, through the client's ApiClient (its
configuration, credentials, TLS and connection pool).

The client's generated API classes are not used: the four the operator would call (core,
apps, networking, coordination) hold about 28 MiB of code once imported, a tenth of what
the operator holds with a thousand EdgeModels, for a dozen requests whose paths are plain.
Answers are read as plain JSON; an answer outside 2xx raises the client's ApiException
(NotFoundException for 404, ...), as the generated classes do."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient, ApiException


def path(group: str, version: str, plural: str, namespace: str | None = None,
         name: str | None = None, subresource: str | None = None) -> str:  # fmt: skip
    """A collection's or an object's path: the core group under /api, the others under /apis."""
    parts = ["api", version] if not group else ["apis", group, version]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts += [part for part in (plural, name, subresource) if part is not None]
    return "/" + "/".join(quote(part, safe="") for part in parts)


class Rest:
    def __init__(self, api: ApiClient, timeout: tuple[float, float]) -> None:
        self.api = api
        self.timeout = timeout

    def call(self, method: str, where: str, body: Any = None,
             query: Mapping[str, str] | None = None, content_type: str = "application/json",
             ) -> Any:  # fmt: skip
        """The answer (a urllib3 response) to one request; the caller reads it (json(),
        send()), which gives its connection back to the pool."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method, resource_path=where, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        answer = self.api.call_api(*request, _request_timeout=self.timeout)
        if not 200 <= answer.status <= 299:
            answer.read()
            raise ApiException.from_response(http_resp=answer, body=None, data=None)
        return answer.response

    def json(self, method: str, where: str, body: Any = None,
             query: Mapping[str, str] | None = None, content_type: str = "application/json",
             ) -> dict[str, Any]:  # fmt: skip
        """The answer's object as plain JSON (the client's typed models cost more to build
        than the request took, and nothing here reads them)."""
        response = self.call(method, where, body, query, content_type)
        try:
            found = json.loads(response.data)
        finally:
            response.release_conn()
        return found if isinstance(found, dict) else {}

    def send(self, method: str, where: str, body: Any = None,
             query: Mapping[str, str] | None = None, content_type: str = "application/json",
             ) -> None:  # fmt: skip
        """A request whose answer nobody needs. The answer is read all the same: a
        connection given back with unread bytes would look dropped to the pool, which would
        open a new TLS connection instead."""
        response = self.call(method, where, body, query, content_type)
        try:
            response.data  # noqa: B018 (read, not decoded)
        finally:
            response.release_conn()
