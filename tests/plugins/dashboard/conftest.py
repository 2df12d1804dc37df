"""The browser of the dashboard's end-to-end tests: Debian's chromium driven by Playwright (one
browser for the package, a fresh context per test), never a browser Playwright downloads.

Every page a test opens is watched: a script error, a content-security-policy violation or a
request to any host but the server under test fails the test. Screenshots go to
``test-artifacts/dashboard/`` (or ``$RPORT_TEST_ARTIFACTS``), the ones in docs/img are copies.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("RPORT_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing")
    with sync_api.sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary profile (user data dir) of its own.
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page with what went wrong on it: script errors, CSP violations, foreign requests."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")
        elif message.type == "error" and "status of 4" not in text and "status of 5" not in text:
            # failed API calls (401, 404, 409...) are shown by the page; other errors are bugs
            self.problems.append(f"console error: {text}")


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """new_page() -> a Playwright page in a fresh context (own sessionStorage), watched."""
    contexts: list[Any] = []
    watched: list[Watched] = []
    foreign: list[str] = []

    def guard(route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    def make(width: int = 1360, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(20_000)
        context.route("**/*", guard)
        contexts.append(context)
        page = context.new_page()
        watched.append(Watched(page))
        return page

    yield make
    problems = [p for w in watched for p in w.problems]
    for context in contexts:
        context.close()
    assert not foreign, f"the dashboard asked hosts other than the server: {foreign}"
    assert not problems, "\n".join(problems)


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def login(page: Any, base: str, username: str, password: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_test_id("username").wait_for()


def session_token(page: Any) -> str:
    return page.evaluate("sessionStorage.getItem('rport-dashboard-token') || ''")


def write_users(path: Path, users: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(users))
    return path
