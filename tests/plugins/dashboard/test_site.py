"""The dashboard as rportd serves it (no browser): the page and its files, the security headers,
no secret in the page, nothing loaded from elsewhere, configuration, disabling it, and the
files shipping in the wheel."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from ...procs import PY, Proc, Server, write_toml
from .conftest import ROOT

STATIC = ROOT / "plugins" / "dashboard" / "static"
IMPORT = re.compile(r"""(?:^|[;\s])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\s*["']([^"']+)["']""")


def csp_of(resp: httpx.Response) -> dict[str, list[str]]:
    policy = resp.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in (x.strip() for x in policy.split(";")) if d}


def assert_secure_headers(resp: httpx.Response) -> None:
    csp = csp_of(resp)
    assert csp["default-src"] == ["'none'"], csp
    assert csp["script-src"][0] == "'self'" and all(s.startswith("'sha256-") for s in csp["script-src"][1:]), csp
    assert csp["style-src"] == csp["connect-src"] == ["'self'"], csp
    assert csp["img-src"] == ["'self'", "data:"], csp  # data: for the QR code of a TOTP secret
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"], csp
    assert csp["form-action"] == ["'none'"], csp
    policy = resp.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "*" not in policy
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in resp.headers


def crawl(base: str) -> dict[str, httpx.Response]:
    """Every file the page loads (links, scripts, the import map, the modules' imports), by
    path; fails on anything outside the server."""
    seen: dict[str, httpx.Response] = {}
    index = httpx.get(base + "/")
    html = index.text
    queue = re.findall(r'(?:src|href)="([^"]+)"', html)
    importmap = json.loads(re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1))
    queue += importmap["imports"].values()
    while queue:
        url = queue.pop()
        assert url.startswith("/") and not url.startswith("//"), f"not a file of this server: {url}"
        if url in seen:
            continue
        resp = seen[url] = httpx.get(base + url)
        assert resp.status_code == 200, (url, resp.status_code, resp.text)
        if url.endswith((".js", ".mjs")):
            for groups in IMPORT.findall(resp.text):
                spec = next(g for g in groups if g)
                if spec in importmap["imports"]:
                    spec = importmap["imports"][spec]
                elif spec.startswith("."):
                    spec = str(Path(url).parent.joinpath(spec)).replace("/./", "/")
                    spec = re.sub(r"/[^/]+/\.\./", "/", spec)
                queue.append(spec)
        if url.endswith(".css"):
            for ref in re.findall(r"url\(([^)]+)\)", resp.text):
                assert ref.strip("'\"").startswith(("/", "data:")), (url, ref)
    return seen


def test_the_page_its_headers_and_no_secret(server: Server) -> None:
    base = server.api_url
    resp = httpx.get(base + "/")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert_secure_headers(resp)
    html = resp.text
    # the one inline script, the import map, is allowed by its hash and nothing else is inline
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S)
    assert len(inline) == 1 and inline[0].startswith('{"imports"')
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert csp_of(resp)["script-src"][1:] == [f"'sha256-{digest}'"]
    assert " style=" not in html and " on" not in re.sub(r"\s+", " ", html).replace(" one", "")
    # nothing secret: the same page for everyone, the settings are three harmless numbers
    for secret in ("foobaz", "1234", server.fingerprint, "rportd-key", "token"):
        assert secret not in html, secret
    settings = json.loads(re.search(r'data-settings="([^"]+)"', html).group(1).replace("&quot;", '"'))
    assert settings == {"api": "/api/v1", "refresh_seconds": 5.0, "idle_pause_seconds": 300.0}
    # the API is untouched: still authenticated, still JSON
    assert httpx.get(base + "/api/v1/status").status_code == 401
    assert server.api is not None and server.api.get("/status").status_code == 200


def test_every_file_the_page_loads_is_served_from_rportd(server: Server) -> None:
    files = crawl(server.api_url)
    for url, resp in files.items():
        assert_secure_headers(resp)
        if url.endswith((".js", ".mjs")):
            assert resp.headers["content-type"] == "text/javascript; charset=utf-8", url
            assert "eval(" not in resp.text and "new Function" not in resp.text, url
        # nothing from elsewhere: no import, fetch, link or CSS url() names another host
        assert not re.search(r"""(?:\bfrom |\bimport |fetch\(|src=|href=|url\()\s*["']?(?:https?:)?//""",
                             resp.text), url
    served = {url.removeprefix("/dashboard/") for url in files}
    shipped = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*")
               if p.suffix in (".js", ".mjs", ".css", ".svg")}
    assert shipped == served, f"files never loaded: {shipped - served}; missing: {served - shipped}"


def test_caching_head_and_errors(server: Server) -> None:
    base = server.api_url
    first = httpx.get(base + "/dashboard/js/main.js")
    assert first.headers["cache-control"] == "no-cache"
    again = httpx.get(base + "/dashboard/js/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert_secure_headers(again)
    head = httpx.head(base + "/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(httpx.get(base + "/").content)
    for path in ("/dashboard/nope.js", "/dashboard/%2e%2e/server.py", "/dashboard/", "/dashboard/index.html"):
        resp = httpx.get(base + path)
        assert resp.status_code == 404, path
        assert resp.json()["errors"][0]["code"] == "ERR_CODE_NOT_FOUND"
        assert_secure_headers(resp)
    resp = httpx.post(base + "/", json={})
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"
    assert resp.json() == {"errors": [{"code": "ERR_CODE_METHOD_NOT_ALLOWED", "title": "method not allowed",
                                       "detail": "POST /"}]}
    for method in ("PUT", "DELETE", "OPTIONS", "PROPFIND"):
        resp = httpx.request(method, base + "/dashboard/js/main.js")
        assert resp.status_code == 405 and resp.json()["errors"][0]["code"] == "ERR_CODE_METHOD_NOT_ALLOWED"
    resp = httpx.get(base + "/elsewhere")  # nobody serves it: the API's 404, as before
    assert resp.status_code == 404
    assert resp.json() == {"errors": [{"code": "ERR_CODE_NOT_FOUND", "title": "not found",
                                       "detail": "GET /elsewhere"}]}


def test_disabled_in_the_configuration(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"plugins": {"disabled": ["dashboard"]}})
    resp = httpx.get(server.api_url + "/")
    assert resp.status_code == 404 and resp.json()["errors"][0]["detail"] == "GET /"
    assert httpx.get(server.api_url + "/dashboard/js/main.js").status_code == 404
    assert server.api is not None
    assert "dashboard" not in server.api.get("/status").json()["data"]["plugins"]


def test_refresh_interval(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"plugins.dashboard": {"refresh_interval": "2s", "idle_pause": "1m"}})
    html = httpx.get(server.api_url + "/").text
    assert 'data-settings="{&quot;api&quot;: &quot;/api/v1&quot;, &quot;refresh_seconds&quot;: 2.0, ' \
           '&quot;idle_pause_seconds&quot;: 60.0}"' in html
    off = make_server("off", extra={"plugins.dashboard": {"refresh_interval": 0}})
    assert "&quot;refresh_seconds&quot;: 0.0" in httpx.get(off.api_url + "/").text
    bad = make_server("bad", start=False, extra={"plugins.dashboard": {"refresh_interval": "0.5s"}})
    with pytest.raises(RuntimeError, match=r"process exited \(2\)"):
        bad.start()
    assert "plugins.dashboard.refresh_interval: at least 1s, or 0 to turn live updates off (got 0.5s)" in bad.log()


def _can_build_wheels() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(p) for p in version.split(".")[:2]) >= (70, 1)


@pytest.mark.skipif(not _can_build_wheels(), reason="needs setuptools >= 70.1 (the test extra)")
def test_the_wheel_ships_and_serves_the_dashboard(tmp_path: Path) -> None:
    """A wheel of the project (not an editable install) holds every file of the dashboard, and
    an rportd run from that wheel's files serves them."""
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("core", "agent", "plugins"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    wheel, = (tmp_path / "dist").glob("rport_py-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        archive.extractall(tmp_path / "site")
    expected = {"rport/plugins/dashboard/static/" + p.relative_to(STATIC).as_posix()
                for p in STATIC.rglob("*") if p.is_file()}
    assert expected <= names, sorted(expected - names)
    assert "dashboard = rport.plugins.dashboard.server" in entry_points

    site = tmp_path / "site"
    server = Server(tmp_path / "server")  # only its configuration: started from the wheel below
    write_toml(server.conf_path, server.config)
    proc = Proc([PY, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import rport.core.cli as c; "
                 "assert c.__file__.startswith(sys.argv[1]), c.__file__; sys.argv[1:2] = []; c.main()",
                 str(site), "-c", str(server.conf_path)], tmp_path / "rportd.log")
    try:
        match = proc.wait_log(r"API listening on http://(\S+):(\d+)")
        base = f"http://{match.group(1)}:{match.group(2)}"
        assert "rport dashboard" in httpx.get(base + "/").text
        served = crawl(base)
        assert "/dashboard/vendor/preact.mjs" in served and "/dashboard/js/app.js" in served
    finally:
        proc.stop()


def test_vendored_libraries_are_the_published_files() -> None:
    """The checksums in static/vendor/README.md are those of the files shipped."""
    readme = (STATIC / "vendor" / "README.md").read_text()
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.mjs)$", readme, re.M))
    shipped = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (STATIC / "vendor").glob("*.mjs")}
    assert listed == shipped
