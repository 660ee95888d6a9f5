"""Ed25519 key pairs: generate, write, read, and name them by a short key id.

Files: ``NAME.key`` is the private key (PKCS#8 PEM, mode 0600, written atomically and never
printed); ``NAME.pub`` the public key (SubjectPublicKeyInfo PEM). A key id is the first 16 hex
digits of the SHA-256 of the raw 32-byte public key: short enough to read aloud, long enough
that two operators' keys never collide by accident. Used by ``outpost keys``, the trust store
and signing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outpost.errors import InputError
from outpost.files import read_or_create, write_atomic

__all__ = [
    "DEVICE_KEY",
    "KeyFileError",
    "KeyPair",
    "device_key",
    "generate",
    "key_id",
    "public_from_pem",
    "public_from_raw",
    "public_pem",
    "raw_public",
    "read_private",
    "read_public",
]


class KeyFileError(InputError):
    """A key file is missing, unreadable, or not the kind of key asked for."""


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The short name of a public key (see the module docstring)."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeyPair:
    """Where ``generate`` wrote a pair, and the pair's key id."""

    private: Path
    public: Path
    key_id: str


def generate(prefix: Path, *, force: bool = False) -> KeyPair:
    """Write ``PREFIX.key`` (0600) and ``PREFIX.pub``; refuse to overwrite unless ``force``."""
    private_path, public_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                raise KeyFileError(f"{path} exists; choose another -o, or pass --force to replace the pair")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(private_path, pem, 0o600, sync_dir=True)
    write_atomic(public_path, public_pem(private.public_key()), 0o644, sync_dir=True)
    return KeyPair(private_path, public_path, key_id(private.public_key()))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror or exc})") from exc


def read_private(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (as ``outpost keys generate`` writes it)."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        hint = "make one with `outpost keys generate`"
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({hint})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key (make one with `outpost keys generate`)")
    return key


def public_from_pem(data: bytes, where: str = "the key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes (a ``.pub`` file's content)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{where}: not a PEM public key (use the .pub file `outpost keys generate` wrote)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where}: not an Ed25519 public key")
    return key


def read_public(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; a private key file is refused, not silently used."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        hint = f"give the public half ({path.stem}.pub) and keep this one secret"
        raise KeyFileError(f"{path}: this is a private key; {hint}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM public key (use the .pub file `outpost keys generate` wrote)") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


DEVICE_KEY = "device-signing.key"  # in the agent's state dir


def device_key(state_dir: Path) -> Ed25519PrivateKey:
    """This device's own signing key (for what it sends home), made on first use (0600)."""

    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    read_or_create(state_dir / DEVICE_KEY, make)
    return read_private(state_dir / DEVICE_KEY)
