"""End-to-end fixtures beyond the session's server, each a `python -m serve` launcher run
as a subprocess: one serving HTTPS with a self-signed certificate made here (TLS and
launcher-log tests), one supervised with a restart policy and a bounded queue (overload
and fault tests; test_faults.py stops it last with SIGTERM)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.launcher import Launched, launch


def self_signed_cert(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate + key (PEM) for `host`, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medgemma-serve test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="session")
def launched_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """`python -m serve` with TLS from a self-signed certificate and an API key."""
    work = tmp_path_factory.mktemp("launched-tls")
    cert, key = self_signed_cert(work / "tls")
    try:
        run = launch(work, f"ssl_certfile={cert}", f"ssl_keyfile={key}")
    except RuntimeError as exc:
        pytest.fail(f"the TLS launcher did not start: {exc}", pytrace=False)
    run.cert = cert
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="session")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """`python -m serve` restarting the server once if it dies, with at most 16 requests
    in flight (more get 503) and a 60 s drain on SIGTERM."""
    work = tmp_path_factory.mktemp("supervised")
    try:
        run = launch(
            work,
            "restart.enabled=true",
            "restart.max_restarts=1",
            "restart.backoff_s=1",
            "drain_timeout_s=60",
            "max_num_queued_reqs=16",
        )
    except RuntimeError as exc:
        pytest.fail(f"the supervised launcher did not start: {exc}", pytrace=False)
    try:
        yield run
    finally:
        run.stop()
