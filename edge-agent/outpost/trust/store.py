"""The device's trust store: the operator public keys it accepts content from, and its policy.

One JSON file, ``STATE_DIR/trust/trust.json`` (written atomically, directory 0700), holding
each key's raw public bytes by key id with the name it was added under, and ``requireDigests``.
Several keys at once is how keys rotate: add the new one, re-sign, remove the old one. An
empty store means "no trust root": content is not required to be signed. Used by
``outpost agent trust`` and by admission.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outpost.errors import InputError
from outpost.files import write_atomic
from outpost.trust.keys import key_id, public_from_raw, raw_public

__all__ = ["TRUST_DIR", "TrustStore", "TrustedKey"]

TRUST_DIR = "trust"  # under the agent's state dir


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    name: str
    added_at: str
    key: Ed25519PublicKey


class TrustStore:
    """The trust file in ``path`` (a directory, created 0700 on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path / "trust.json"

    @classmethod
    def of_state_dir(cls, state_dir: Path) -> TrustStore:
        return cls(state_dir / TRUST_DIR)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"keys": {}, "requireDigests": False}
        except (OSError, ValueError) as exc:
            # Never fall back to "no trust root" on a damaged file: that would accept anything.
            raise InputError(f"{self.file}: unreadable trust store ({exc}); restore it or re-add the keys") from exc
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise InputError(f"{self.file}: not a trust store; restore it or re-add the keys")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.file, json.dumps(data, indent=2, sort_keys=True), 0o600, sync_dir=True)

    def keys(self) -> list[TrustedKey]:
        out = []
        for kid, entry in sorted(self._load()["keys"].items()):
            try:
                key = public_from_raw(base64.b64decode(entry["publicKey"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{self.file}: key {kid} is damaged; remove and re-add it") from exc
            out.append(TrustedKey(kid, str(entry.get("name", "")), str(entry.get("addedAt", "")), key))
        return out

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> key, for signature checks."""
        return {k.key_id: k.key for k in self.keys()}

    def add(self, key: Ed25519PublicKey, name: str) -> str:
        """Trust ``key``; returns its key id (adding a key twice keeps the first entry)."""
        data = self._load()
        kid = key_id(key)
        data["keys"].setdefault(
            kid,
            {
                "name": name,
                "publicKey": base64.b64encode(raw_public(key)).decode(),
                "addedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        self._save(data)
        return kid

    def remove(self, kid: str) -> bool:
        """Stop trusting a key id; False when it was not trusted."""
        data = self._load()
        if data["keys"].pop(kid, None) is None:
            return False
        self._save(data)
        return True

    @property
    def require_digests(self) -> bool:
        return bool(self._load().get("requireDigests", False))

    def set_require_digests(self, value: bool) -> None:
        data = self._load()
        data["requireDigests"] = value
        self._save(data)
