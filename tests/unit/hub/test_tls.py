"""Certificate generation and the renewal rule (anchors §3.8): pure, with an injected clock."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from outpost.hub.tls import (
    BACKDATE,
    SERVER_LIFETIME,
    TlsFiles,
    ensure_certificates,
    generate_ca,
    generate_server,
    needs_renewal,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca():
    return generate_ca(T0, common_name="test CA")


def test_server_certificate_is_signed_by_the_ca_with_sans(ca) -> None:
    server = generate_server(ca, T0, hosts=("127.0.0.1", "localhost", "edge-1"))
    cert = server.cert
    cert.verify_directly_issued_by(ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "edge-1"]
    assert cert.not_valid_before_utc == T0 - BACKDATE
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == SERVER_LIFETIME
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    ("offset", "renew"),
    [
        (dt.timedelta(0), False),  # just issued
        (dt.timedelta(days=59), False),  # 31 days left: more than a third
        (dt.timedelta(days=61), True),  # 29 days left: less than a third
        (dt.timedelta(days=200), True),  # expired
        (-dt.timedelta(hours=2), True),  # clock jumped back before notBefore (T0 - 1 h)
        (-dt.timedelta(days=400), True),
    ],
)
def test_renewal_rule(ca, offset: dt.timedelta, renew: bool) -> None:
    cert = generate_server(ca, T0, hosts=("localhost",)).cert
    assert needs_renewal(cert, T0 + offset) is renew


def test_a_clock_behind_does_not_rotate_the_ca(ca) -> None:
    assert not needs_renewal(ca.cert, T0 - dt.timedelta(days=30), outside_window_only=True)
    assert needs_renewal(ca.cert, T0 + dt.timedelta(days=3650), outside_window_only=True)


def test_naive_datetimes_are_utc(ca) -> None:
    cert = generate_server(ca, T0, hosts=("localhost",)).cert
    assert not needs_renewal(cert, T0.replace(tzinfo=None))


def _files(root: Path) -> TlsFiles:
    return TlsFiles(root / "ca.pem", root / "ca.key", root / "server.pem", root / "server.key")


def test_ensure_creates_then_keeps_then_renews(tmp_path: Path) -> None:
    files = _files(tmp_path / "tls")
    assert ensure_certificates(files, T0, hosts=("localhost",))
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca_pem, server_pem = files.ca_cert.read_bytes(), files.server_cert.read_bytes()

    assert not ensure_certificates(files, T0 + dt.timedelta(days=30), hosts=("localhost",))
    assert files.server_cert.read_bytes() == server_pem

    assert ensure_certificates(files, T0 + dt.timedelta(days=70), hosts=("localhost",))  # last third
    assert files.ca_cert.read_bytes() == ca_pem  # the CA stays: leaf devices keep trusting it
    renewed = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))

    assert ensure_certificates(files, T0 - dt.timedelta(days=10), hosts=("localhost",))  # clock jumped back
    back = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert back.not_valid_before_utc <= T0 - dt.timedelta(days=10) < back.not_valid_after_utc
    assert files.ca_cert.read_bytes() == ca_pem
    assert not list(files.ca_cert.parent.glob(".*.tmp"))


def test_corrupt_or_foreign_server_certificate_is_replaced(tmp_path: Path) -> None:
    files = _files(tmp_path)
    ensure_certificates(files, T0, hosts=("localhost",))
    files.server_cert.write_bytes(b"garbage")
    assert ensure_certificates(files, T0, hosts=("localhost",))
    other = generate_ca(T0, common_name="other")
    foreign = generate_server(other, T0, hosts=("localhost",))
    files.server_cert.write_bytes(foreign.cert_pem)
    files.server_key.write_bytes(foreign.key_pem)
    assert ensure_certificates(files, T0, hosts=("localhost",))
    x509.load_pem_x509_certificate(files.server_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    )
