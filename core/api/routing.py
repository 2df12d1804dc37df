"""API routes with their metadata, and the wrapper that gives every route the same behaviour:
authentication through the auth hooks, unknown query parameters refused, errors in the standard
envelope (a plugin's unexpected exception is a logged 500, never a traceback to the client).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..access import check_client_access
from ..errors import ApiError
from ..events import ApiRequestServed, AuditEvent
from ..plugins import call_until
from ..users import User, check_permission

if TYPE_CHECKING:
    from ..server import RportServer

log = logging.getLogger("rport.api")

API_PREFIX = "/api/v1"
Endpoint = Callable[[Request], Awaitable[Response]]


@attrs.frozen
class Audit:
    """What the audit log records for a route (``register(..., audit=Audit(...))``, or just
    ``audit=("client.tunnel", "create")``): one entry per successful (2xx) request, with the
    caller, their address, the client of a ``{client_id}`` path, and:

    ``affected``: where the affected id comes from: ``"path:<param>"``, ``"body:<key>"`` (a key
    of the JSON body), ``"response:<key>"`` (a key of the response's ``data``); empty: the last
    path parameter, else the response's ``data.id`` or ``data.jid``, else the body's ``id``.
    ``request``: record the JSON body and the query parameters. ``response``: record the
    response's ``data``. ``failed``: also record requests answered 401 or 403, under this
    action (e.g. ``"failed"`` for logins), once the endpoint has named the user in
    ``request.state.audit.username`` (a login does so only past its throttling, so that
    refusals that cost nothing to provoke are not recorded). An endpoint refines its entry
    through ``request.state.audit`` (:class:`AuditNote`)."""

    application: str
    action: str
    affected: str = ""
    request: bool = True
    response: bool = False
    failed: str = ""


@attrs.define
class AuditNote:
    """``request.state.audit`` of a route registered with ``audit=``: what the endpoint knows
    better than the core. ``affected_id``, ``client_ids`` (the clients acted on, one entry
    each) and ``username`` (the user a public route, such as a login, acted for) replace what
    the core would record when they are set; ``request`` is what to record as the request
    instead of the JSON body and query (for a body that is not JSON: an upload's fields)."""

    affected_id: str | None = None
    client_ids: list[str] | None = None
    username: str | None = None
    request: Any = None


def _audit_declaration(value: Any, owner: str, path: str) -> Audit | None:
    if value is None or isinstance(value, Audit):
        return value
    if (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, str) and v for v in value)):
        return Audit(*value)
    raise ValueError(f"plugin {owner!r}: route {path}: audit must be an Audit or an "
                     "(application, action) pair")


@attrs.frozen
class RouteSpec:
    path: str  # below /api/v1
    endpoint: Endpoint
    methods: tuple[str, ...]
    name: str  # "<plugin>:<name>"
    owner: str
    params: tuple[str, ...] = ()  # accepted query parameters (besides sort/filter/fields/page
    list_params: bool = False  # ...which list routes accept)
    summary: str = ""
    public: bool = False
    body: Mapping[str, Any] | bool | None = None
    """JSON schema of the request body (OpenAPI ``requestBody``); a body of another media type
    is ``{"content": {"multipart/form-data": {"schema": ...}}}``. ``False``: the route takes no
    body, said explicitly (a POST, PUT or PATCH whose input is its path and query); None:
    nothing declared (fine for GET and DELETE)."""
    responses: Mapping[int, str] = attrs.field(factory=dict)
    """Every status code the route answers, with what it means (success and errors)."""
    permission: str | None = None
    """The per-function permission a non-admin user needs (RPort's ``commands``, ``tunnels``,
    ``scripts``, ...), or None if the route needs none (see docs/plugins.md)."""
    audit: Audit | None = None
    """What the audit log records of a successful request, or None if nothing."""
    agent: bool = False
    """The route talks to the agent of its ``{client_id}`` (through its session, or with
    listeners that follow it): in a cluster it runs on the node holding that agent."""


@attrs.frozen
class PageSpec:
    path: str  # outside /api, e.g. "/" or "/dashboard/{path:path}"
    endpoint: Endpoint
    methods: tuple[str, ...]
    name: str  # "<plugin>:<name>"
    owner: str


class RouteTable:
    """Routes registered by the core and plugins; a duplicate path+method or name fails.
    ``pages`` are plugins' web pages outside ``/api`` (``register.page``)."""

    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []
        self.pages: list[PageSpec] = []

    def registrar(self, owner: str) -> Callable[..., None]:
        def register(path: str, endpoint: Endpoint, methods: Iterable[str] = ("GET",), *,
                     name: str = "", params: Iterable[str] = (), list_params: bool = False,
                     summary: str = "", public: bool = False,
                     body: Mapping[str, Any] | bool | None = None,
                     responses: Mapping[int, str] | None = None,
                     permission: str | None = None,
                     audit: Audit | tuple[str, str] | None = None, agent: bool = False) -> None:
            if not path.startswith("/"):
                raise ValueError(f"plugin {owner!r}: route path {path!r} must start with /")
            if agent and "{client_id}" not in path:
                raise ValueError(f"plugin {owner!r}: route {path}: agent=True needs a "
                                 "{client_id} in the path (the agent it talks to)")
            if body is True or (body is not None and body is not False
                                and not isinstance(body, Mapping)):
                raise ValueError(f"plugin {owner!r}: route {path}: body must be a JSON schema "
                                 "(a mapping), False (the route takes no body) or None")
            for status in responses or {}:
                if not (isinstance(status, int) and 100 <= status <= 599):
                    raise ValueError(f"plugin {owner!r}: route {path}: {status!r} is not an "
                                     "HTTP status code")
            spec = RouteSpec(
                path=path, endpoint=endpoint, methods=tuple(m.upper() for m in methods),
                name=f"{owner}:{name or endpoint.__name__}", owner=owner, params=tuple(params),
                list_params=list_params, public=public,
                summary=summary or (inspect.getdoc(endpoint) or "").split("\n")[0],
                body=body, responses=dict(sorted((responses or {}).items())),
                permission=permission, audit=_audit_declaration(audit, owner, path),
                agent=agent)
            if any(page.name == spec.name for page in self.pages):
                raise ValueError(f"route name {spec.name!r} registered twice")
            for other in self.specs:
                if other.name == spec.name:
                    raise ValueError(f"route name {spec.name!r} registered twice")
                clash = set(other.methods) & set(spec.methods)
                if other.path == spec.path and clash:
                    raise ValueError(f"route {sorted(clash)[0]} {API_PREFIX}{path} registered by "
                                     f"both {other.owner!r} and {owner!r}")
            self.specs.append(spec)

        def page(path: str, endpoint: Endpoint, methods: Iterable[str] = ("GET",), *,
                 name: str = "") -> None:
            if not path.startswith("/"):
                raise ValueError(f"plugin {owner!r}: page path {path!r} must start with /")
            if path == "/api" or path.startswith("/api/"):
                raise ValueError(f"plugin {owner!r}: page path {path!r} is under /api, which "
                                 "belongs to the API (register an API route instead)")
            spec = PageSpec(path=path, endpoint=endpoint,
                            methods=tuple(m.upper() for m in methods),
                            name=f"{owner}:{name or endpoint.__name__}", owner=owner)
            for other in [*self.specs, *self.pages]:
                if other.name == spec.name:
                    raise ValueError(f"route name {spec.name!r} registered twice")
            for other in self.pages:
                if other.path == spec.path:
                    raise ValueError(f"page {path} registered by both {other.owner!r} and {owner!r}")
            self.pages.append(spec)

        register.page = page  # type: ignore[attr-defined]
        return register

    def starlette_routes(self, server: "RportServer") -> list[Route]:
        return [Route(API_PREFIX + spec.path, _wrap(server, spec), methods=list(spec.methods),
                      name=spec.name) for spec in self.specs]


    def starlette_pages(self) -> list[Route]:
        return [Route(spec.path, _Page(spec), name=spec.name) for spec in self.pages]


LIST_PREFIXES = ("filter[", "fields[", "page[")


class _Page:
    """A plugin's page as an ASGI app, so that Starlette's Route sends it every method (with a
    plain endpoint function it would answer other methods itself, in plain text): public (the
    core authenticates nothing), other methods a 405 and an unexpected exception a logged 500,
    both in the API's error envelope."""

    def __init__(self, spec: PageSpec) -> None:
        self.spec = spec
        self.methods = set(spec.methods) | ({"HEAD"} if "GET" in spec.methods else set())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        spec = self.spec
        if request.method not in self.methods:
            return error_response(ApiError(
                405, "method not allowed", code="ERR_CODE_METHOD_NOT_ALLOWED",
                detail=f"{request.method} {request.url.path}",
                headers={"Allow": ", ".join(sorted(self.methods))}))
        try:
            return await spec.endpoint(request)
        except ApiError as exc:
            return error_response(exc)
        except Exception:
            log.exception("page %s %s of plugin %r failed", request.method, request.url.path,
                          spec.owner)
            return error_response(ApiError(500, "internal server error", code="ERR_CODE_INTERNAL",
                                           detail=f"the plugin {spec.owner!r} failed; see the server log"))


def _wrap(server: "RportServer", spec: RouteSpec) -> Endpoint:
    allowed = set(spec.params)
    checks_client = "{client_id}" in spec.path

    async def respond(request: Request) -> Response:
        try:
            if not spec.public:
                request.state.user = await authenticate(server, request)
                check_scopes(request.state.user, request.method, spec.path)
                if spec.permission is not None:  # RPort's per-function permission (403)
                    await check_permission(server, request.state.user, spec.permission)
                if checks_client:  # a client's route: only for users who may use the client
                    client = server.clients.get(request.path_params.get("client_id", ""))
                    if client is not None:
                        check_client_access(server, request.state.user, [client])
            if not spec.list_params:
                for key in request.query_params:
                    if key not in allowed:
                        raise ApiError(400, f"unsupported query parameter '{key}'",
                                       code="ERR_CODE_BAD_QUERY_PARAM")
            if spec.agent and server.cluster is not None:
                # In a cluster, the node that holds the agent answers (see core/cluster).
                forwarded = await server.cluster.forward_if_remote(request, spec)
                if forwarded is not None:
                    return forwarded
            return await spec.endpoint(request)
        except ApiError as exc:
            return error_response(exc)
        except Exception:
            log.exception("route %s %s of plugin %r failed", request.method, request.url.path,
                          spec.owner)
            return error_response(ApiError(500, "internal server error",
                                           code="ERR_CODE_INTERNAL", detail=f"the plugin {spec.owner!r} failed; see the server log"))

    # Observation (metrics, audit log), apart from the checks above: one event per request.
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        if spec.audit is not None:
            request.state.audit = AuditNote()
        response = await respond(request)
        _observe(server, spec, request, response, started)
        return response

    endpoint.__name__ = spec.name
    return endpoint


def _observe(server: "RportServer", spec: RouteSpec, request: Request, response: Response,
             started: float) -> None:
    """Publish the request's ApiRequestServed and, for a route with ``audit=``, its
    AuditEvent (the writers are subscribers: the request does not wait for them)."""
    status = response.status_code
    server.bus.publish(ApiRequestServed(spec.name, request.method, status,
                                        time.perf_counter() - started))
    audit = spec.audit
    if audit is None:
        return
    if 200 <= status < 300:
        action = audit.action
    elif audit.failed and status in (401, 403) and request.state.audit.username is not None:
        action = audit.failed
    else:
        return
    try:
        server.bus.publish(_audit_event(spec, audit, action, request, response))
    except Exception:  # what an endpoint left in request.state.audit, say: never the request's
        log.exception("audit entry of %s %s (route %s) failed", request.method,
                      request.url.path, spec.name)


def _is_json(response: Response) -> bool:
    """A whole JSON body (an endpoint's JSONResponse, or one another node of a cluster answered
    a forwarded request with), not a stream."""
    return (getattr(response, "body", None) is not None
            and response.headers.get("content-type", "").startswith("application/json"))


def _audit_event(spec: RouteSpec, audit: Audit, action: str, request: Request,
                 response: Response) -> AuditEvent:
    note: AuditNote = getattr(request.state, "audit", None) or AuditNote()
    user = getattr(request.state, "user", None)
    params = request.path_params
    raw = getattr(request.state, "audit_body", None)
    body = json.loads(raw) if raw is not None else None
    data: Any = None
    if (audit.response or audit.affected.startswith("response:") or not audit.affected) \
            and _is_json(response) and 200 <= response.status_code < 300:
        try:
            data = json.loads(bytes(response.body)).get("data")
        except (ValueError, AttributeError):
            data = None
    affected = note.affected_id
    if affected is None:
        source, _, key = audit.affected.partition(":")
        if source == "path":
            affected = params.get(key)
        elif source == "body":
            affected = body.get(key) if isinstance(body, dict) else None
        elif source == "response":
            affected = data.get(key) if isinstance(data, dict) else None
        elif params:
            affected = list(params.values())[-1]
        elif isinstance(data, dict) and (data.get("id") or data.get("jid")):
            affected = data.get("id") or data.get("jid")
        elif isinstance(body, dict):
            affected = body.get("id")
    if note.client_ids is not None:
        client_ids: tuple[str, ...] = tuple(str(c) for c in note.client_ids)
    else:
        client_ids = (str(params["client_id"]),) if "client_id" in params else ()
    recorded: Any = None
    if audit.request and note.request is not None:
        recorded = note.request
    elif audit.request:
        query = dict(request.query_params)
        if body is not None and query:
            recorded = {"query": query, "body": body}
        else:
            recorded = body if body is not None else (query or None)
    username = note.username if note.username is not None else \
        (user.username if isinstance(user, User) else "")
    return AuditEvent(
        application=audit.application, action=action, username=username,
        remote_ip=request.client.host if request.client else "",
        affected_id="" if affected is None else str(affected), client_ids=client_ids,
        request=recorded, response=data if audit.response else None)


async def run_route(server: "RportServer", spec: RouteSpec, request: Request) -> Response:
    """A route for a request another node of the cluster authenticated (``request.state.user``
    is set): the same checks of the parameters, the endpoint, the same errors."""
    try:
        _check_params(spec, request)
        if spec.audit is not None:  # (recorded by the node the caller asked, not here)
            request.state.audit = AuditNote()
        return await spec.endpoint(request)
    except ApiError as exc:
        return error_response(exc)
    except Exception:
        return _failed(spec, request)


def _check_params(spec: RouteSpec, request: Request) -> None:
    if not spec.list_params:
        for key in request.query_params:
            if key not in spec.params:
                raise ApiError(400, f"unsupported query parameter '{key}'",
                               code="ERR_CODE_BAD_QUERY_PARAM")


def _failed(spec: RouteSpec, request: Request) -> Response:
    log.exception("route %s %s of plugin %r failed", request.method, request.url.path, spec.owner)
    return error_response(ApiError(500, "internal server error", code="ERR_CODE_INTERNAL",
                                   detail=f"the plugin {spec.owner!r} failed; see the server log"))


READ_METHODS = ("GET", "HEAD")
CLIENTS_AUTH_PATH = "/clients-auth"


def check_scopes(user: User, method: str, path: str) -> None:
    """A caller authenticated with a scoped token (RPort's API tokens) may do only what its
    scopes allow: ``read`` only GET and HEAD, ``clients-auth`` only the ``/clients-auth`` routes,
    ``read+write`` everything. ``path`` is the route's template (below ``/api/v1``), so no
    spelling of the URL can escape. A violation is a 403."""
    scopes = set(user.scopes)
    if "read+write" in scopes:
        return
    if "read" in scopes and method.upper() in READ_METHODS:
        return
    if "clients-auth" in scopes and (path == CLIENTS_AUTH_PATH
                                     or path.startswith(CLIENTS_AUTH_PATH + "/")):
        return
    names = ", ".join(f'"{s}"' for s in user.scopes) or "none"
    if "read" in scopes and "clients-auth" not in scopes:
        allowed = "only GET and HEAD requests"
    elif "clients-auth" in scopes and "read" not in scopes:
        allowed = f"only the {API_PREFIX}{CLIENTS_AUTH_PATH} routes"
    elif scopes == {"read", "clients-auth"}:
        allowed = f"only GET and HEAD requests and the {API_PREFIX}{CLIENTS_AUTH_PATH} routes"
    else:
        allowed = "nothing"
    raise ApiError(403, f"the scope of this token ({names}) allows {allowed}",
                   code="ERR_CODE_TOKEN_SCOPE", detail=f"{method.upper()} {API_PREFIX}{path} is not allowed")


def _unauthorized(detail: str, **headers: str) -> ApiError:
    return ApiError(401, "unauthorized", code="ERR_CODE_UNAUTHORIZED", detail=detail,
                    headers={"WWW-Authenticate": 'Basic realm="rport"', **headers})


async def authenticate(server: "RportServer", request: Request) -> User:
    """Ask the auth plugins who is calling; failures are throttled per source address, for
    every auth plugin alike."""
    address = request.client.host if request.client else "?"
    keys = [f"api-address:{address}"]
    blocked = server.api_throttle.blocked_for(*keys)
    if blocked > 0:
        raise _unauthorized(f"too many failed logins from {address}; try again in {math.ceil(blocked)}s",
                            **{"Retry-After": str(math.ceil(blocked))})
    presented = "authorization" in request.headers
    try:
        user = await call_until(server.hook.rport_authenticate_api,
                                lambda result: isinstance(result, User), server=server, request=request)
        if user is not None:
            server.api_throttle.success(*keys)
            return user
    except ApiError as exc:
        if exc.status == 401:
            server.api_throttle.failure(*keys)
            log.warning("API authentication failed from %s: %s", address, exc.items[0].detail)
            exc.headers.setdefault("WWW-Authenticate", 'Basic realm="rport"')
            for item in exc.items:
                if not item.code:
                    exc.items[exc.items.index(item)] = attrs.evolve(item, code="ERR_CODE_UNAUTHORIZED")
        raise
    if presented:
        server.api_throttle.failure(*keys)
        log.warning("API authentication failed from %s for %s %s", address, request.method,
                    request.url.path)
        raise _unauthorized("invalid credentials")
    raise _unauthorized("authentication required")


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)


def data_response(data: Any, *, count: int | None = None, status: int = 200) -> JSONResponse:
    body: dict[str, Any] = {"data": data}
    if count is not None:
        body["meta"] = {"count": count}
    return JSONResponse(body, status_code=status)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request's body, refused with 413 past ``max_bytes`` (never read further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "request body too large", code="ERR_CODE_BODY_TOO_LARGE",
                           detail=f"the limit is {max_bytes} bytes")
    return bytes(body)


MAX_JSON_DEPTH = 64  # no body of this API nests deeper than a few levels


def _json_problem(value: Any) -> str:
    """Why a decoded body cannot be used, or "": nesting past MAX_JSON_DEPTH, or a string with
    a lone surrogate (``"\\ud800"`` is valid JSON but no text: it cannot be stored, logged or
    sent on as UTF-8). Iterative, so any depth json.loads accepted is safe to walk."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return ""


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, with RPort's errors for a missing, oversized or invalid one."""
    body = await read_body(request, max_bytes)
    if not body.strip():
        raise ApiError(400, "Missing body with json data.", code="ERR_CODE_MISSING_BODY")
    try:
        value = json.loads(body.decode("utf-8"))  # UTF-8 only, as RPort (no UTF-16 guessing)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                       detail=f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                       detail=f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=str(exc)) from None
    problem = _json_problem(value)
    if problem:
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=problem)
    if hasattr(request.state, "audit"):  # the audit log records it (as sent: not as changed)
        request.state.audit_body = body
    return value
