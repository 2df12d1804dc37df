"""The server's key, its fingerprint and the TLS contexts built on it.

Agents do not verify ``rportd`` through a CA: they pin the fingerprint of the server's public key
(``rport --fingerprint ...``) and compare it with the key the server presents in the TLS
handshake, before any credential is sent. For an RPort user to keep their pinned fingerprints,
both parts must be reproduced exactly as RPort (Go) computes them:

* **Key from ``key_seed``.** RPort feeds a deterministic reader (chisel's ``DetermRand``: the
  seed strengthened by 2048 rounds of SHA-512, then one SHA-512 per 32-byte block) into Go's
  legacy ``ecdsa.GenerateKey`` on P-256, which reads 40 bytes in a single ``Read`` call and
  turns them into the scalar ``k = b mod (N-1) + 1``. ``Read`` produces whole blocks and
  drops the unused tail of the last one, so the 40 bytes are block 1 plus 8 bytes of block 2.
* **Fingerprint.** The MD5 of the key's SSH wire blob (``ecdsa-sha2-nistp256``), written as
  colon-separated hex pairs. MD5 is kept only for compatibility; the OpenSSH-style
  ``SHA256:...`` form of the same blob is offered as the stronger pin.

The fingerprints are computed by :mod:`.pinning` from the key's point, the functions an agent
uses on the certificate the server presents (without loading ``cryptography``).

Without a seed, a random key is generated once and stored in the data directory. The key and a
self-signed certificate are always written to files too, as :meth:`ssl.SSLContext.load_cert_chain`
only reads files.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import tempfile
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import pinning
from .pinning import client_ssl_context  # noqa: F401  (re-exported: the server's tests use it)

KEY_FILE = "rportd-key.pem"
FINGERPRINT_FILE = "rportd-fingerprint.txt"
CERT_FILE = "rportd-cert.pem"
TLS_KEY_FILE = "rportd-tls-key.pem"

_DETERM_RAND_ITER = 2048
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class KeyFileError(Exception):
    """The stored server key cannot be read or is not a P-256 private key."""


class _DetermRand:
    """chisel's deterministic io.Reader: every ``read`` call yields whole 32-byte blocks,
    truncated to the requested size (the rest of the last block is lost, as in Go)."""

    def __init__(self, seed: bytes) -> None:
        next_ = seed
        for _ in range(_DETERM_RAND_ITER):
            next_ = hashlib.sha512(next_).digest()[:32]
        self._next = next_

    def read(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            h = hashlib.sha512(self._next).digest()
            out += h[32:]
            self._next = h[:32]
        return out[:size]


def derive_private_key(seed: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 key RPort derives from ``key_seed`` (Go's legacy randFieldElement)."""
    b = _DetermRand(seed.encode("utf-8")).read(256 // 8 + 8)
    k = int.from_bytes(b, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(k, ec.SECP256R1())


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ValueError("only ECDSA P-256 public keys are supported")
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RPort's fingerprint: MD5 of the SSH blob as ``aa:bb:...`` (lower-case hex)."""
    return pinning.fingerprint(_point(public_key))


def sha256_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """OpenSSH-style ``SHA256:<base64 without padding>`` of the same SSH blob."""
    return pinning.sha256_fingerprint(_point(public_key))


def fingerprint_matches(expected: str, public_key: ec.EllipticCurvePublicKey) -> bool:
    """Whether a pinned fingerprint fits the key (see :func:`.pinning.fingerprint_matches`)."""
    return pinning.fingerprint_matches(expected, _point(public_key))


@attrs.frozen
class ServerIdentity:
    """The server key with its fingerprints and the files the TLS context loads."""

    private_key: ec.EllipticCurvePrivateKey
    cert_pem: bytes
    key_pem: bytes
    fingerprint: str
    sha256: str
    cert_file: Path
    key_file: Path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file in the same directory, mode set before any content, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_create_stored_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        _write_atomic(path, _key_pem(key), 0o600)
        return key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read server key file {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"server key file {path} does not hold an ECDSA P-256 private key")
    return key


def _self_signed_cert(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rportd")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * 20 + 5))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("rportd")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_server_identity(data_dir: Path, key_seed: str = "") -> ServerIdentity:
    """The server key (derived from ``key_seed``, else stored in ``data_dir``), its fingerprint
    file, and a self-signed certificate plus key written for the TLS context."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        data_dir.mkdir(mode=0o700, parents=True)
        os.chmod(data_dir, 0o700)  # mkdir's mode is reduced by the umask
    if key_seed:
        key = derive_private_key(key_seed)
    else:
        key = _load_or_create_stored_key(data_dir / KEY_FILE)
    public_key = key.public_key()
    fp = fingerprint(public_key)
    cert_pem = _self_signed_cert(key)
    key_pem = _key_pem(key)
    cert_file = data_dir / CERT_FILE
    key_file = data_dir / TLS_KEY_FILE
    # 0600 like every file of the data directory (the fingerprint is public: GET /status has it)
    _write_atomic(data_dir / FINGERPRINT_FILE, (fp + "\n").encode("ascii"), 0o600)
    _write_atomic(key_file, key_pem, 0o600)
    _write_atomic(cert_file, cert_pem, 0o600)
    return ServerIdentity(
        private_key=key,
        cert_pem=cert_pem,
        key_pem=key_pem,
        fingerprint=fp,
        sha256=sha256_fingerprint(public_key),
        cert_file=cert_file,
        key_file=key_file,
    )


def server_ssl_context(identity: ServerIdentity) -> ssl.SSLContext:
    """TLS server context (TLS 1.2 or newer) presenting the identity's self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(identity.cert_file, identity.key_file)
    # No TLS 1.3 session tickets: agents never resume a session (each connection checks the
    # server's key), and making and sending the two tickets OpenSSL issues by default was a
    # sixth of the server's CPU per handshake (179 -> 151 us, docs/performance.md).
    ctx.num_tickets = 0
    return ctx


def peer_public_key(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> ec.EllipticCurvePublicKey:
    """The public key of the certificate the peer presented in the handshake."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the peer presented no certificate")
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the peer's certificate does not hold an ECDSA public key")
    return key
