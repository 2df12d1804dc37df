"""What an agent needs to pin rportd's key, without the ``cryptography`` package.

Agents do not verify the server through a CA: after the TLS handshake they compare the
fingerprint of the server's public key with the one they were given (``--fingerprint``),
before any credential is sent (:mod:`rport.core.keys` explains the fingerprint and how the
server derives its key). An agent needs only three things for that: a TLS client context that
verifies nothing itself, the key in the certificate the server presented, and its fingerprints.
They live here, on the standard library alone: loading ``cryptography`` to read one key costs
an agent a quarter of its memory (8 MiB: its compiled library and bcrypt's, see
docs/performance.md). The server's side (:mod:`rport.core.keys`) computes its fingerprints with
the same functions, from the same bytes.

The key is read from the certificate's DER by a strict reader of the few fields in front of it:
``Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber
INTEGER, signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE, subject SEQUENCE,
subjectPublicKeyInfo SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING } ... } ... }``
(RFC 5280 §4.1). Only an uncompressed P-256 point is accepted; anything else is a ValueError.
OpenSSL has parsed the same certificate, and the handshake proved that the server holds the
private key of exactly this public key.
"""

from __future__ import annotations

import base64
import hashlib
import ssl

MIN_PREFIX = 8  # shortest accepted prefix of the MD5 colon fingerprint

_EC_P256_ALGORITHM = bytes.fromhex(
    "06072a8648ce3d0201"  # OID 1.2.840.10045.2.1, id-ecPublicKey
    "06082a8648ce3d030107"  # OID 1.2.840.10045.3.1.7, prime256v1 (P-256)
)
_SEQUENCE, _INTEGER, _BIT_STRING, _VERSION = 0x30, 0x02, 0x03, 0xA0


def client_ssl_context() -> ssl.SSLContext:
    """TLS client context without CA verification: the caller must check the server's key
    with :func:`fingerprint_matches` after the handshake, before sending any credential."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _element(der: bytes, pos: int, end: int, tag: int | None = None) -> tuple[int, int, int]:
    """The DER element at ``pos`` (which must end by ``end``): (tag, start, end of its value)."""
    if pos + 2 > end:
        raise ValueError("truncated certificate")
    found, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 3 or pos + size > end or der[pos] == 0:
            raise ValueError("invalid length in certificate")
        length = int.from_bytes(der[pos:pos + size], "big")
        if length < 0x80:
            raise ValueError("invalid length in certificate")  # DER: the short form
        pos += size
    if pos + length > end:
        raise ValueError("truncated certificate")
    if tag is not None and found != tag:
        raise ValueError(f"unexpected element 0x{found:02x} in certificate")
    return found, pos, pos + length


def certificate_point(der: bytes) -> bytes:
    """The 65-byte uncompressed P-256 point of the certificate's public key (``der``: the
    certificate as :meth:`ssl.SSLObject.getpeercert` gives it with ``binary_form=True``)."""
    _, pos, end = _element(der, 0, len(der), _SEQUENCE)
    if end != len(der):
        raise ValueError("trailing bytes after the certificate")
    _, pos, tbs_end = _element(der, pos, end, _SEQUENCE)
    tag, start, after = _element(der, pos, tbs_end)
    if tag == _VERSION:
        tag, start, after = _element(der, after, tbs_end)
    if tag != _INTEGER:
        raise ValueError("certificate without a serial number")
    pos = after
    for _ in ("signature", "issuer", "validity", "subject"):
        _, _, pos = _element(der, pos, tbs_end, _SEQUENCE)
    _, pos, spki_end = _element(der, pos, tbs_end, _SEQUENCE)
    _, start, pos = _element(der, pos, spki_end, _SEQUENCE)
    if der[start:pos] != _EC_P256_ALGORITHM:
        raise ValueError("the certificate does not hold an ECDSA P-256 public key")
    _, start, bits_end = _element(der, pos, spki_end, _BIT_STRING)
    bits = der[start:bits_end]
    if bits_end != spki_end or len(bits) != 66 or bits[:2] != b"\x00\x04":
        raise ValueError("the certificate's P-256 key is not an uncompressed point")
    return bits[1:]


def ssh_blob(point: bytes) -> bytes:
    """The key's SSH wire blob (``ecdsa-sha2-nistp256``), which RPort's fingerprint hashes."""
    return b"".join(len(part).to_bytes(4, "big") + part
                    for part in (b"ecdsa-sha2-nistp256", b"nistp256", point))


def fingerprint(point: bytes) -> str:
    """RPort's fingerprint: MD5 of the SSH blob as ``aa:bb:...`` (lower-case hex)."""
    return ":".join(f"{byte:02x}" for byte in hashlib.md5(ssh_blob(point)).digest())


def sha256_fingerprint(point: bytes) -> str:
    """OpenSSH-style ``SHA256:<base64 without padding>`` of the same SSH blob."""
    digest = hashlib.sha256(ssh_blob(point)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint_matches(expected: str, point: bytes) -> bool:
    """Whether a pinned fingerprint fits the key: the exact ``SHA256:...`` form, or a prefix of
    at least 8 characters of the MD5 colon form (case-insensitive), as RPort accepts prefixes."""
    expected = expected.strip()
    if expected.startswith("SHA256:"):
        return expected == sha256_fingerprint(point)
    if len(expected) < MIN_PREFIX:
        return False
    return fingerprint(point).startswith(expected.lower())
