"""The Starlette application: the route table of the core and plugins, errors in one envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import ASGIApp

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


def build_app(server: "RportServer") -> ASGIApp:
    """The API under /api/v1 and, in front of it, the pages plugins serve elsewhere
    (``register.page``); a path that nothing serves gets the API's 404."""
    app = Starlette(routes=server.routes.starlette_routes(server),
                    exception_handlers={HTTPException: _http_error})
    # /tunnels/ is not /tunnels: a 404 in our error shape, as RPort answers, rather than
    # Starlette's unauthenticated 307 to the other spelling.
    app.router.redirect_slashes = False
    pages = server.routes.starlette_pages()
    if not pages:
        return app
    # Page paths never start with /api (register.page refuses them), so the API's requests
    # always fall through to it, its 404s and 405s included.
    return Router(routes=pages, default=app, redirect_slashes=False)
