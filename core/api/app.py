"""The Starlette application: the route table of the core and plugins, errors in one envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from .routing import error_response

if TYPE_CHECKING:
    from ..server import RportServer

_TITLES = {404: ("not found", "ERR_CODE_NOT_FOUND"),
           405: ("method not allowed", "ERR_CODE_METHOD_NOT_ALLOWED")}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title, code = _TITLES.get(exc.status_code, (str(exc.detail), "ERR_CODE_HTTP"))
    detail = f"{request.method} {request.url.path}"
    return error_response(ApiError(exc.status_code, title, code=code, detail=detail,
                                   headers=exc.headers))


def build_app(server: "RportServer") -> Starlette:
    app = Starlette(routes=server.routes.starlette_routes(server),
                    exception_handlers={HTTPException: _http_error})
    # /tunnels/ is not /tunnels: a 404 in our error shape, as RPort answers, rather than
    # Starlette's unauthenticated 307 to the other spelling.
    app.router.redirect_slashes = False
    return app
