"""The dashboard's files, held in memory, and the two pages that serve them: ``/`` (the app's
HTML) and ``/dashboard/<file>`` (scripts, styles, the vendored Preact and htm).

Every answer carries the same security headers: a content-security-policy that allows only our
own files (no inline script except the import map, allowed by its hash; no eval; no inline
style), no framing, no referrer. The HTML holds no secret: it is the same file for everyone and
the app asks the API for everything (the login token lives in the tab's sessionStorage and is
sent as ``Authorization: Bearer``, never as a cookie, so no other site can make a browser use it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import attrs
from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import ApiError

from .config import DashboardConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSET_PREFIX = "/dashboard/"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
_INLINE_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)
_SETTINGS_MARK = "{{settings}}"


@attrs.frozen
class Asset:
    body: bytes
    content_type: str
    etag: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def load_assets(root: Path) -> dict[str, Asset]:
    """Every servable file below ``root`` (by its path relative to it, with ``/``): the ones
    with a known type. ``index.html`` is not among them (see :func:`load_index`)."""
    assets = {}
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type:
            body = path.read_bytes()
            assets[path.relative_to(root).as_posix()] = Asset(body, content_type, _etag(body))
    return assets


def script_hashes(html: str) -> list[str]:
    """CSP sources for the inline scripts of ``html`` (the import map): ``'sha256-...'``."""
    hashes = []
    for match in _INLINE_SCRIPT.finditer(html):
        if "src=" in match.group("attrs"):
            continue
        digest = hashlib.sha256(match.group("body").encode()).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return hashes


def content_security_policy(hashes: list[str]) -> str:
    return "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(["'self'", *hashes]),
        "style-src 'self'",
        "img-src 'self' data:",  # the QR code of a new TOTP secret (a PNG from the API)
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are sent by the app as JSON, never by the browser
        "frame-ancestors 'none'",
    ])


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    }


def page_settings(config: DashboardConfig) -> dict[str, Any]:
    """What the app needs to know from the server's configuration (nothing secret)."""
    return {"api": "/api/v1", "refresh_seconds": float(config.refresh_interval),
            "idle_pause_seconds": float(config.idle_pause)}


class Site:
    """The dashboard's two pages, over files loaded once at start-up."""

    def __init__(self, index_html: str, assets: Mapping[str, Asset],
                 settings: Mapping[str, Any]) -> None:
        # The settings go into a data attribute (HTML-escaped JSON), not into a script.
        encoded = json.dumps(dict(settings)).replace("&", "&amp;").replace('"', "&quot;")
        html = index_html.replace(_SETTINGS_MARK, encoded)
        self.headers = security_headers(content_security_policy(script_hashes(html)))
        body = html.encode()
        self.index_asset = Asset(body, "text/html; charset=utf-8", _etag(body))
        self.assets = dict(assets)

    @classmethod
    def load(cls, config: DashboardConfig, root: Path = STATIC_DIR) -> "Site":
        """Read the files (blocking: call it in a thread)."""
        index = (root / "index.html").read_text(encoding="utf-8")
        if _SETTINGS_MARK not in index:
            raise ValueError(f"{root / 'index.html'} has no {_SETTINGS_MARK} mark")
        return cls(index, load_assets(root), page_settings(config))

    def _send(self, request: Request, asset: Asset) -> Response:
        headers = {**self.headers, "ETag": asset.etag, "Cache-Control": "no-cache"}
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(b"" if request.method == "HEAD" else asset.body, media_type=asset.content_type,
                        headers={**headers, "Content-Length": str(len(asset.body))})

    async def index(self, request: Request) -> Response:
        """The dashboard (one HTML page; the app routes with the URL's #fragment)."""
        return self._send(request, self.index_asset)

    async def asset(self, request: Request) -> Response:
        """A file of the dashboard: scripts, styles, images."""
        asset = self.assets.get(request.path_params["path"])
        if asset is None:
            raise ApiError(404, "not found", code="ERR_CODE_NOT_FOUND",
                           detail=f"{request.method} {request.url.path}", headers=dict(self.headers))
        return self._send(request, asset)
