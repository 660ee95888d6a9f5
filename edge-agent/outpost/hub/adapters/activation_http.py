"""The hub's leaf-activation endpoint over HTTP: ``POST /api/v1/activate`` (``outpost.hub.activation``).

Served by the standard library's WSGI server on its own thread (as prometheus-client serves the
metrics), on 127.0.0.1 by default: put the hub's TLS terminator in front of it for devices on the
network. Logs the device id and the outcome, never a key or a credential.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from outpost.hub.activation import MAX_BODY, ActivationReply, activate

__all__ = ["PATH", "ActivationServer"]

log = logging.getLogger(__name__)
PATH = "/api/v1/activate"
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large"}  # fmt: skip


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ActivationServer:
    """Serves activation for the leaves ``leaves()`` returns (read per request: deployments change)."""

    def __init__(self, host: str, port: int, *, key: bytes, leaves: Callable[[], Iterable[str]]) -> None:
        self._key = key
        self._leaves = leaves
        self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="outpost-activation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") != PATH:
            reply = ActivationReply(404, {"error": f"not found; activation is POST {PATH}"})
        elif environ.get("REQUEST_METHOD") != "POST":
            reply = ActivationReply(405, {"error": f"use POST {PATH}"})
        else:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                reply = ActivationReply(413 if length > MAX_BODY else 400, {"error": "body: bad Content-Length"})
            else:
                reply = activate(environ["wsgi.input"].read(length), key=self._key, leaves=set(self._leaves()))
            log.info("leaf activation %s: %d %s", reply.device_id or "?", reply.status, reply.body.get("error", "ok"))
        body = reply.encode()
        start_response(
            f"{reply.status} {_REASONS.get(reply.status, '')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
