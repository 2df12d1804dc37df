"""The dashboard's two-factor login (``[api] totp_enabled``): Debian's chromium against a real
rportd whose users are in the database. The first login shows the QR code and key of a new TOTP
secret; the codes are computed here from the key the page shows, as an authenticator app would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from ..test_users import db_users_config
from .conftest import session_token, shot

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is missing").expect


def test_two_factor_login_in_the_browser(make_server: Any, tmp_path: Path,
                                         new_page: Callable[..., Any]) -> None:
    server = make_server(extra=db_users_config(tmp_path, {}, totp_enabled=True))
    page = new_page()
    page.goto(server.api_url + "/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("foobaz")
    page.keyboard.press("Enter")
    # First time: a new secret, its QR code and key; no session yet.
    expect(page.get_by_role("heading", name="Authenticator code")).to_be_visible()
    qr = page.get_by_role("img", name="QR code of your TOTP secret")
    expect(qr).to_be_visible()
    assert page.evaluate("document.querySelector('.totp-setup img').naturalWidth") >= 150
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    shot(page, "login-totp-setup")
    assert session_token(page) == ""
    code = pyotp.TOTP(secret)
    wrong = "000000" if code.now() != "000000" else "111111"
    page.get_by_label("6-digit code").fill(wrong)
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("invalid code")
    page.get_by_label("6-digit code").fill(code.now())  # the same first-step token, a second try
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("username")).to_have_text("admin")
    token = session_token(page)
    me = httpx.get(server.api_url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["data"]["username"] == "admin"

    # Next time: only the code.
    second = new_page()
    second.goto(server.api_url + "/")
    second.get_by_label("User name").fill("admin")
    second.get_by_label("Password").fill("foobaz")
    second.keyboard.press("Enter")
    expect(second.get_by_label("6-digit code")).to_be_visible()
    assert second.locator(".totp-setup").count() == 0
    shot(second, "login-totp-code")
    # (the code of now opened the first login: a code is good once; the next one is accepted)
    second.get_by_label("6-digit code").fill(code.at(time.time() + 30))
    second.keyboard.press("Enter")
    expect(second.get_by_test_id("username")).to_have_text("admin")
