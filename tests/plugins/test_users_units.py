"""Units of the users plugin and the TOTP helpers that the end-to-end tests cannot pin down: a
code one step either side of now is good and two steps is not, RPort's stored secrets are read,
the QR code is a PNG of about 200 px, and the body checks' messages."""

from __future__ import annotations

import base64
import struct

import pyotp
import pytest
from rport.core.plugin import ApiError
from rport.plugins.auth_jwt import totp
from rport.plugins.users.validate import check_changes, check_group

NOW = 1_800_000_015.0  # 15 s into a 30-second step


def test_codes_one_step_either_side_are_good_two_are_not() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32 and len(base64.b32decode(secret)) == 20  # 160 bits, as RPort
    gen = pyotp.TOTP(secret)
    for offset in (-30, 0, 30):
        assert totp.verify(secret, gen.at(NOW + offset), at=NOW), offset
    for offset in (-60, 60, 3600):
        assert not totp.verify(secret, gen.at(NOW + offset), at=NOW), offset
    for bad in ("", "12345", "1234567", "abcdef", "１２３４５６", " " * 6):
        assert not totp.verify(secret, bad, at=NOW), bad
    assert not totp.verify("not base32!", "123456", at=NOW)  # unreadable secret: no code is right
    # The time step of the code, which the second login step records to refuse a replay.
    step = int(NOW) // 30
    assert [totp.matching_step(secret, gen.at(NOW + o), at=NOW) for o in (-30, 0, 30)] == [
        step - 1, step, step + 1]


def test_rports_stored_secret_and_ours_are_read() -> None:
    rport = ("otpauth://totp/admin:RPort?algorithm=SHA1&digits=6&issuer=admin&period=30"
             "&secret=MOMAL53O572T3V3VMKCRDPLITLFZGBIB")  # as OpenRPort 0.9.14 stored it
    assert totp.secret_of(rport) == "MOMAL53O572T3V3VMKCRDPLITLFZGBIB"
    ours = totp.uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "ann", "RPort")
    assert ours.startswith("otpauth://totp/RPort:ann?") and "issuer=RPort" in ours
    assert totp.secret_of(ours) == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    assert totp.secret_of("JBSWY3DPEHPK3PXP") == "JBSWY3DPEHPK3PXP"  # a bare secret
    assert totp.secret_of("") == totp.secret_of("   ") == totp.secret_of("otpauth://x") == ""


def test_the_qr_code_is_a_png_of_about_200_pixels() -> None:
    png = base64.b64decode(totp.qr_png_base64(totp.uri(totp.new_secret(), "someone", "RPort")))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and 150 <= width <= 200


def problems(exc: pytest.ExceptionInfo[ApiError]) -> list[str]:
    return [item.title for item in exc.value.items]


def test_user_bodies() -> None:
    changes = check_changes({"username": "ann", "password": "long enough", "groups": ["A", "A", "B"]},
                            creating=True, min_length=8)
    assert changes.groups == ("A", "B") and changes.password == "long enough"
    with pytest.raises(ApiError) as info:
        check_changes({"username": "a/b", "password": "short", "groups": ["", " x"]},
                      creating=True, min_length=8)
    assert problems(info) == ["username must not contain /, ?, # or control characters",
                              "Your password is too short", "group name must not be empty",
                              "group name must not start or end with whitespace"]
    for body in ([], {"groups": "A"}, {"password_expired": "yes"}, {"username": 1},
                 {"token": "x"}, {"totp_secret": "x"}):
        with pytest.raises(ApiError) as info:
            check_changes(body, creating=False, min_length=8, current="ann")
        assert problems(info) == ["Invalid JSON data."], body
    assert check_changes({"password_expired": False}, creating=False, min_length=8,
                         current="ann").password_expired is False
    with pytest.raises(ApiError) as info:
        check_changes({"username": "ann"}, creating=False, min_length=8, current="ann")
    assert problems(info) == ["nothing to change"]


def test_group_bodies() -> None:
    assert check_group("Ops", {"name": "ignored", "permissions": {"commands": True}}) == {
        p: p == "commands" for p in ("auditlog", "commands", "monitoring", "scheduler", "scripts",
                                     "tunnels", "uploads", "vault")}
    assert not any(check_group("Ops", {}).values())
    for body in ({"permissions": {"root": True}}, {"permissions": []},
                 {"permissions": {"commands": 1}}, {"tunnels_restricted": {"local": ["22"]}}):
        with pytest.raises(ApiError):
            check_group("Ops", body)
    with pytest.raises(ApiError):
        check_group("Administrators", {"permissions": {}})
