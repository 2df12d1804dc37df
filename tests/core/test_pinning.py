"""The agent's key pinning without ``cryptography``: the point read from a certificate's DER is
the one ``cryptography`` reads, the fingerprints are the server's, and anything else is refused."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rport.core import keys, pinning

SEED = "Z4mQqmkDnexNNR4giNU3Me"
SEED_FINGERPRINT = "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11"


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _point_by_cryptography(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def _built(key: ec.EllipticCurvePrivateKey, *, names: int = 1, version_1: bool = False) -> bytes:
    """A certificate made with cryptography: many SANs make every length long-form."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinning test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if not version_1:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(f"host-{i}.example.com") for i in range(names)]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _certificates(tmp_path: Path) -> dict[str, bytes]:
    identity = keys.load_or_create_server_identity(tmp_path / "seeded", key_seed=SEED)
    generated = keys.load_or_create_server_identity(tmp_path / "generated")
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    key = ec.generate_private_key(ec.SECP256R1())
    return {
        "rportd seeded": _der(identity.cert_pem),
        "rportd generated": _der(generated.cert_pem),
        "trustme CA": _der(ca.cert_pem.bytes()),
        "trustme leaf": _der(leaf.cert_chain_pems[0].bytes()),
        "many names": _built(key, names=300),
        "X.509 v1": _built(key, version_1=True),
    }


def test_point_and_fingerprints_are_the_servers(tmp_path: Path) -> None:
    for label, der in _certificates(tmp_path).items():
        point = pinning.certificate_point(der)
        assert point == _point_by_cryptography(der), label
        public_key = x509.load_der_x509_certificate(der).public_key()
        assert pinning.fingerprint(point) == keys.fingerprint(public_key), label
        assert pinning.sha256_fingerprint(point) == keys.sha256_fingerprint(public_key), label
    seeded = pinning.certificate_point(_certificates(tmp_path)["rportd seeded"])
    assert pinning.fingerprint(seeded) == SEED_FINGERPRINT
    assert pinning.fingerprint_matches(SEED_FINGERPRINT[:8], seeded)
    assert pinning.fingerprint_matches(keys.sha256_fingerprint(
        keys.derive_private_key(SEED).public_key()), seeded)
    assert not pinning.fingerprint_matches(SEED_FINGERPRINT[:7], seeded)


def test_other_keys_are_refused() -> None:
    rsa = trustme.CA(key_type=trustme.KeyType.RSA)
    p384 = _built(ec.generate_private_key(ec.SECP384R1()))
    for der in (_der(rsa.cert_pem.bytes()), p384):
        with pytest.raises(ValueError, match="does not hold an ECDSA P-256 public key"):
            pinning.certificate_point(der)


def test_malformed_certificates_are_refused(tmp_path: Path) -> None:
    der = _certificates(tmp_path)["trustme leaf"]
    point = _point_by_cryptography(der)
    for cut in range(len(der)):  # every truncation
        with pytest.raises(ValueError):
            pinning.certificate_point(der[:cut])
    for bad in (der + b"\x00", b"\x31" + der[1:], b"", b"\x30\x80" + der[2:],
                der[:1] + b"\x84\xff\xff\xff\xff" + der[4:]):
        with pytest.raises(ValueError):
            pinning.certificate_point(bad)
    # A byte changed anywhere either makes the certificate unreadable or leaves its key as it
    # was; it never yields another point (the handshake proved this key, not another).
    for i in range(len(der)):
        changed = der[:i] + bytes([der[i] ^ 0x01]) + der[i + 1:]
        try:
            got = pinning.certificate_point(changed)
        except ValueError:
            continue
        assert got == point or got == changed[der.index(point):der.index(point) + 65], i
