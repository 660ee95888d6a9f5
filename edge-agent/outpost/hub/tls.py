"""Certificates for the broker's TLS listener: a device CA and a server certificate it signs.

Called by ``outpost.hub.adapters.mosquitto`` (on start and on every renewal check) and tests.
``needs_renewal`` and the generators are pure (``now`` is passed in); ``ensure_certificates``
reads and atomically rewrites the PEM files (keys 0600).

Renewal rule (anchors §3.8: edgeHub's certificates expired and broke the runtime, and an
expired one was only regenerated at startup): a certificate is renewed when less than a third of
its lifetime is left OR when the clock is outside its validity window, including a clock that
jumped back before ``notBefore``. The server certificate follows that rule on every check. The
CA is long lived and is re-created only when expired or in its last third: re-creating it
invalidates the copy installed on leaf devices, so a clock that is merely behind does not
rotate it (clients verify the chain on their own clocks).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from outpost.files import write_atomic

__all__ = [
    "CA_LIFETIME",
    "SERVER_LIFETIME",
    "Issued",
    "TlsFiles",
    "ensure_certificates",
    "generate_ca",
    "generate_server",
    "needs_renewal",
    "server_hosts",
]

CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=90)
#: notBefore is set this far before "now" so small clock differences between hub and clients pass.
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class TlsFiles:
    """Where the PEM files live; ``ensure_certificates`` keeps them current."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _utc(now: dt.datetime) -> dt.datetime:
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def needs_renewal(cert: x509.Certificate, now: dt.datetime, *, outside_window_only: bool = False) -> bool:
    """True when less than a third of the lifetime is left, or ``now`` is outside the validity window.

    ``outside_window_only`` (used for the CA) ignores a clock that is before ``notBefore``.
    """
    now = _utc(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return not outside_window_only
    if now >= end:
        return True
    return end - now < (end - start) / 3


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_ca(now: dt.datetime, *, common_name: str, lifetime: dt.timedelta = CA_LIFETIME) -> Issued:
    """A self-signed device CA (ECDSA P-256) valid from ``now - BACKDATE`` for ``lifetime``."""
    now = _utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def server_hosts() -> tuple[str, ...]:
    """The default subject alternative names: loopback and this machine's hostname."""
    return tuple(dict.fromkeys(["127.0.0.1", "localhost", os.uname().nodename]))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_server(
    ca: Issued, now: dt.datetime, *, hosts: tuple[str, ...], lifetime: dt.timedelta = SERVER_LIFETIME
) -> Issued:
    """A server certificate for ``hosts`` (SANs) signed by ``ca``, valid from ``now - BACKDATE``."""
    now = _utc(now)
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the device CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + lifetime)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load(cert: Path, key: Path) -> Issued | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        issued = Issued(cert.read_bytes(), key.read_bytes())
        issued.cert  # noqa: B018 -- parse now: a corrupt file is regenerated, not served
        return issued
    return None


def ensure_certificates(
    files: TlsFiles,
    now: dt.datetime,
    *,
    hosts: tuple[str, ...] | None = None,
    server_lifetime: dt.timedelta = SERVER_LIFETIME,
    ca_lifetime: dt.timedelta = CA_LIFETIME,
    common_name: str = "Outpost device CA",
) -> bool:
    """Create or renew the CA and server certificate as the renewal rule says; True if anything changed.

    Keys are written 0600, certificates 0644, each atomically (write, fsync, rename). The broker
    reads them on start and on SIGHUP (the supervisor reloads it after a change).
    """
    hosts = hosts or server_hosts()
    files.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    changed = False
    ca = _load(files.ca_cert, files.ca_key)
    if ca is None or needs_renewal(ca.cert, now, outside_window_only=True):
        ca = generate_ca(now, common_name=common_name, lifetime=ca_lifetime)
        write_atomic(files.ca_key, ca.key_pem, 0o600)
        write_atomic(files.ca_cert, ca.cert_pem, 0o644)
        changed = True
    server = _load(files.server_cert, files.server_key)
    if server is None or changed or needs_renewal(server.cert, now) or not _issued_by(server.cert, ca.cert):
        server = generate_server(ca, now, hosts=hosts, lifetime=server_lifetime)
        write_atomic(files.server_key, server.key_pem, 0o600)
        write_atomic(files.server_cert, server.cert_pem, 0o644)
        changed = True
    return changed


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
