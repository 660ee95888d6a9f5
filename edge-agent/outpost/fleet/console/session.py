"""Signed, expiring console sessions, recorded on the server, and the CSRF token bound to each.

A session cookie is ``name.expiry.nonce.mac``; the MAC key is derived from the operator's stored
token hash, so a new operator token ends every session. The cookie alone is not enough: each
session is also a row in the database (:class:`SessionStore`, keyed by the cookie's sha256, never
the cookie), so signing out ends it on every fleet process at once, a copied cookie included, and
a session unused for ``idle`` seconds ends too (:func:`alive`). The CSRF token is a second MAC over
the session, sent back in a form field or header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "IDLE_SECONDS",
    "SESSION_SECONDS",
    "TOUCH_SECONDS",
    "SessionRecord",
    "SessionStore",
    "alive",
    "csrf_token",
    "make_session",
    "session_id",
    "session_name",
    "verify_session",
]

SESSION_SECONDS = 12 * 3600
"""A session ends this long after sign-in, used or not."""
IDLE_SECONDS = 3600
"""A session unused this long ends."""
TOUCH_SECONDS = 60
"""Last use is written at most this often (a page view is not a database write)."""


@dataclass(frozen=True)
class SessionRecord:
    operator: str
    created: float
    expires: float
    last_seen: float


class SessionStore(Protocol):
    """Sessions on the server. Implemented by :class:`outpost.fleet.adapters.console_store.SqlConsoleStore`."""

    def add_session(self, session: str, record: SessionRecord) -> None: ...
    def session(self, session: str) -> SessionRecord | None: ...
    def touch_session(self, session: str, at: float) -> None: ...
    def end_session(self, session: str) -> bool: ...
    def prune_sessions(self, now: float) -> None: ...


def session_id(cookie: str) -> str:
    """What the server keeps of a cookie: its sha256 (a database dump holds no usable session)."""
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def alive(record: SessionRecord | None, operator: str, now: float, idle: float = IDLE_SECONDS) -> bool:
    """Is the recorded session still on: not signed out, not expired, not idle too long, this operator's."""
    return record is not None and record.operator == operator and now < record.expires and now - record.last_seen < idle


def _key(operator_hash: str) -> bytes:
    return hashlib.sha256(b"outpost-console-session\0" + operator_hash.encode()).digest()


def _mac(key: bytes, text: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode().rstrip("=")


def make_session(name: str, operator_hash: str, now: float | None = None, max_age: float = SESSION_SECONDS) -> str:
    expiry = int((now if now is not None else time.time()) + max_age)
    body = f"{base64.urlsafe_b64encode(name.encode()).decode().rstrip('=')}.{expiry}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_mac(_key(operator_hash), body)}"


def session_name(cookie: str) -> str | None:
    """The operator name a cookie claims (unverified: look its hash up, then :func:`verify_session`)."""
    parts = cookie.split(".")
    if len(parts) != 4:
        return None
    try:
        return base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def verify_session(cookie: str, operator_hash: str | None, now: float | None = None) -> bool:
    if operator_hash is None:
        return False
    body, _, mac = cookie.rpartition(".")
    parts = body.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), _mac(_key(operator_hash), body).encode()):
        return False
    return int(parts[1]) > (now if now is not None else time.time())


def csrf_token(cookie: str, operator_hash: str) -> str:
    return _mac(_key(operator_hash), "csrf\0" + cookie)
