from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rport.core.keys import (
    KeyFileError,
    ServerIdentity,
    client_ssl_context,
    derive_private_key,
    fingerprint,
    fingerprint_matches,
    load_or_create_server_identity,
    peer_public_key,
    server_ssl_context,
    sha256_fingerprint,
)

SEED = "Z4mQqmkDnexNNR4giNU3Me"
SEED_FINGERPRINT = "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11"


def test_seed_gives_rport_fingerprint() -> None:
    assert fingerprint(derive_private_key(SEED).public_key()) == SEED_FINGERPRINT


def test_same_seed_same_fingerprint(tmp_path: Path) -> None:
    first = load_or_create_server_identity(tmp_path / "a", key_seed=SEED)
    second = load_or_create_server_identity(tmp_path / "b", key_seed=SEED)
    assert first.fingerprint == second.fingerprint == SEED_FINGERPRINT
    assert first.sha256 == second.sha256
    assert not (tmp_path / "a" / "rportd-key.pem").exists()  # a seeded key is not stored


def test_generated_key_is_persisted_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_server_identity(data_dir)
    second = load_or_create_server_identity(data_dir)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != SEED_FINGERPRINT
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / "rportd-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_fingerprint_file(tmp_path: Path) -> None:
    identity = load_or_create_server_identity(tmp_path, key_seed=SEED)
    assert (tmp_path / "rportd-fingerprint.txt").read_text() == SEED_FINGERPRINT + "\n"
    assert identity.cert_file == tmp_path / "rportd-cert.pem"
    assert identity.key_file == tmp_path / "rportd-tls-key.pem"
    assert identity.cert_file.read_bytes() == identity.cert_pem
    assert identity.key_file.read_bytes() == identity.key_pem


def test_key_files_are_private(tmp_path: Path) -> None:
    load_or_create_server_identity(tmp_path)
    assert stat.S_IMODE((tmp_path / "rportd-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "rportd-tls-key.pem").stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "rportd-key.pem"
    key_file.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="rportd-key.pem"):
        load_or_create_server_identity(tmp_path)


@pytest.mark.parametrize(
    ("expected", "ok"),
    [
        (SEED_FINGERPRINT, True),
        ("  " + SEED_FINGERPRINT + "\n", True),
        (SEED_FINGERPRINT[:8], True),
        (SEED_FINGERPRINT[:7], False),
        ("", False),
        (SEED_FINGERPRINT.upper(), True),
        ("5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:12", False),
        ("aa:bb:cc:dd", False),
    ],
)
def test_fingerprint_matches_md5(expected: str, ok: bool) -> None:
    assert fingerprint_matches(expected, derive_private_key(SEED).public_key()) is ok


def test_fingerprint_matches_sha256() -> None:
    public_key = derive_private_key(SEED).public_key()
    sha = sha256_fingerprint(public_key)
    assert sha.startswith("SHA256:") and not sha.endswith("=")
    assert len(sha) == len("SHA256:") + 43
    assert fingerprint_matches(sha, public_key)
    assert fingerprint_matches(f" {sha} ", public_key)
    assert not fingerprint_matches(sha[:-1], public_key)
    assert not fingerprint_matches("SHA256:" + sha[7:].swapcase(), public_key)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not fingerprint_matches(sha, other)


async def _handshake(identity: ServerIdentity) -> tuple[ec.EllipticCurvePublicKey, bool]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=server_ssl_context(identity)
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ssl_context()
        )
        try:
            tls = writer.get_extra_info("ssl_object")
            key = peer_public_key(tls)
            assert await reader.read() == b"hello"  # (TLS 1.3 tickets come before it)
            ticket = tls.session is not None and tls.session.has_ticket
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
    return key, ticket


def test_tls_handshake_presents_identity(tmp_path: Path) -> None:
    identity = load_or_create_server_identity(tmp_path, key_seed=SEED)
    key, ticket = asyncio.run(_handshake(identity))
    assert not ticket  # agents never resume a session: no ticket is made for them
    assert fingerprint(key) == identity.fingerprint == SEED_FINGERPRINT
    assert fingerprint_matches(identity.sha256, key)
