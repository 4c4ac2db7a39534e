"""The proxied routes, registered in one loop from the table.

Use: `add_proxy_routes(app, ROUTES, clients=clients, dependencies=PROXY_DEPENDENCIES)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request, params
from starlette.responses import Response

from services.api.proxy.client import ServiceClients
from services.api.proxy.table import API_PREFIX, ProxyRoute
from shared.errors import Unprocessable
from shared.schemas.common import ErrorResponse

Endpoint = Callable[..., Awaitable[Response]]
_KW = inspect.Parameter.KEYWORD_ONLY


def responses(route: ProxyRoute) -> dict[int | str, dict[str, Any]]:
    """The route's documented answers besides the success: its errors and the 503."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text} for code, text in route.errors.items()
    }
    out[503] = {
        "model": ErrorResponse,
        "description": f"The {route.service} service or the database is down; the detail "
        "names it; Retry-After says when to try again.",
    }
    out[401] = {"model": ErrorResponse, "description": "No API key, or an unknown or revoked one."}
    out[403] = {
        "model": ErrorResponse,
        "description": f"The key's role is below {route.role}.",
    }
    if route.method == "POST":
        out[413] = {"model": ErrorResponse, "description": "The body is over this route's limit."}
        out[415] = {"model": ErrorResponse, "description": "The body is not JSON."}
    if route.rate is not None:
        out[429] = {
            "model": ErrorResponse,
            "description": f"Over the key's {route.rate} rate; see Retry-After.",
        }
    if route.media_types:
        out[route.status_code] = {"content": {media: {} for media in route.media_types}}
    return out


SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def _signature(route: ProxyRoute) -> inspect.Signature:
    """What FastAPI validates and documents: path parameters, the query model, the body."""
    parameters = [inspect.Parameter("request", _KW, annotation=Request)]
    parameters += [
        inspect.Parameter(name, _KW, annotation=annotation)
        for name, annotation in route.path_params.items()
    ]
    if route.query is not None:
        parameters.append(
            inspect.Parameter("query", _KW, annotation=Annotated[route.query, Query()])
        )
    if route.body is not None and route.body_required:
        parameters.append(inspect.Parameter("body", _KW, annotation=route.body))
    elif route.body is not None:
        parameters.append(
            inspect.Parameter("body", _KW, annotation=route.body | None, default=None)
        )
    return inspect.Signature(parameters, return_annotation=Response)


def _check_repeated(request: Request, names: frozenset[str]) -> None:
    """A query parameter given twice is a 422 naming it (it would be read as its last value)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in names:
            if name in seen:
                raise Unprocessable(
                    [
                        {
                            "field": f"query.{name}",
                            "loc": ["query", name],
                            "msg": "given more than once; send it once",
                            "type": "repeated",
                        }
                    ]
                )
            seen.add(name)


def _endpoint(route: ProxyRoute, clients: ServiceClients) -> Endpoint:
    """An endpoint that forwards the validated request to the route's service.

    The clients are bound here rather than injected per request: a FastAPI dependency costs
    each proxied request 20-40 us of the gateway's CPU (docs/gateway.md).
    """
    service, target, names = route.service, route.target, tuple(route.path_params)
    seconds = clients.timeouts[route.timeout]
    # Every query parameter of the table is a single value.
    query_names = frozenset(route.query.model_fields) if route.query is not None else frozenset()

    def service_path(values: dict[str, Any]) -> str:
        if not names:
            return target
        return target.format_map({name: quote(str(values[name]), safe="") for name in names})

    if route.streamed:

        async def endpoint(request: Request, **values: Any) -> Response:
            if query_names:
                _check_repeated(request, query_names)
            return await clients.stream(service, service_path(values), request)

    else:

        async def endpoint(request: Request, **values: Any) -> Response:
            if query_names:
                _check_repeated(request, query_names)
            return await clients.forward(service, service_path(values), request, timeout=seconds)

    endpoint.__name__ = endpoint.__qualname__ = route.name
    endpoint.__signature__ = _signature(route)  # type: ignore[attr-defined]
    return endpoint


def add_proxy_routes(
    app: FastAPI,
    routes: Sequence[ProxyRoute],
    *,
    clients: ServiceClients,
    dependencies: Sequence[params.Depends] = (),
) -> None:
    """One route per table entry; `dependencies` run before each (authentication, later).

    Added to the app itself, in table order: FastAPI matches routes one by one, and an included
    router is scanned twice per request.
    """
    for route in routes:
        if set(route.path_params) != route.placeholders():
            raise ValueError(f"{route.name}: path parameters do not match {route.path}")
        app.add_api_route(
            API_PREFIX + route.path,
            _endpoint(route, clients),
            methods=[route.method],
            name=route.name,
            response_model=route.response,
            status_code=route.status_code,
            responses=responses(route),
            summary=route.summary,
            description=f"Role: **{route.role}** or above.",
            openapi_extra={"security": SECURITY},
            tags=list(route.tags) or None,
            dependencies=list(dependencies),
        )
