"""Time-based one-time passwords (RFC 6238) for the two-factor login, as RPort makes them: a
160-bit secret, SHA-1, 6 digits, 30 s (what every authenticator app, Microsoft's included,
accepts), kept in the users table as an ``otpauth://`` URI (RPort's ``totp_secret`` column), a
code accepted one step either side of now, and the QR code as a base64 PNG of about 200 px.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hmac
import io
import time

import pyotp
import segno

QR_PIXELS = 200


def new_secret() -> str:
    return pyotp.random_base32(32)  # 32 base32 characters: 160 bits


def uri(secret: str, username: str, account_name: str) -> str:
    """The ``otpauth://`` URI an app scans: ``issuer`` is ``[api] totp_account_name`` (so that
    several servers are told apart in the app), the account the user's name."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=account_name)


def secret_of(stored: str) -> str:
    """The base32 secret of a stored value (an ``otpauth://`` URI, or a bare secret); "" if
    none or unreadable."""
    stored = stored.strip()
    if not stored:
        return ""
    if stored.startswith("otpauth://"):
        try:
            return pyotp.parse_uri(stored).secret
        except ValueError:
            return ""
    return stored


def matching_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The time step (Unix time // 30) whose code ``code`` is, among now, a step before and a
    step after; None if none (a wrong code). The step lets the caller refuse a code used
    before (RFC 6238 §5.2)."""
    code = code.strip()
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    now = int(at if at is not None else time.time())
    try:
        gen = pyotp.TOTP(secret)
        for offset in (0, -1, 1):
            when = now + offset * gen.interval
            if hmac.compare_digest(gen.at(when), code):
                return gen.timecode(datetime.datetime.fromtimestamp(when, datetime.timezone.utc))
    except (ValueError, TypeError, binascii.Error):  # an unreadable stored secret: no code is right
        return None
    return None


def verify(secret: str, code: str, *, at: float | None = None) -> bool:
    """True if ``code`` is the code of ``secret`` now, a step before or a step after."""
    return matching_step(secret, code, at=at) is not None


def qr_png_base64(text: str) -> str:
    """A PNG of the QR code of ``text``, about :data:`QR_PIXELS` wide, in base64."""
    code = segno.make(text, error="m", micro=False)
    width, _ = code.symbol_size(scale=1)
    out = io.BytesIO()
    code.save(out, kind="png", scale=max(1, QR_PIXELS // width))
    return base64.b64encode(out.getvalue()).decode("ascii")
