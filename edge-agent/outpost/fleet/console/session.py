"""Signed, expiring console sessions and the CSRF token bound to each.

A session cookie is ``name.expiry.nonce.mac``; the MAC key is derived from the operator's stored
token hash, so every fleet process on one database accepts it and a new operator token ends every
session. The CSRF token is a second MAC over the session, sent back in a form field or header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

__all__ = ["SESSION_SECONDS", "csrf_token", "make_session", "session_name", "verify_session"]

SESSION_SECONDS = 12 * 3600


def _key(operator_hash: str) -> bytes:
    return hashlib.sha256(b"outpost-console-session\0" + operator_hash.encode()).digest()


def _mac(key: bytes, text: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode().rstrip("=")


def make_session(name: str, operator_hash: str, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + SESSION_SECONDS)
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
