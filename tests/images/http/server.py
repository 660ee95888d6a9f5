"""Tiny HTTP server for tests: GET /healthz -> 200 JSON; anything else -> 404. SIGTERM exits 0."""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIND = os.environ.get("BIND") or "127.0.0.1"
PORT = int(os.environ.get("PORT") or 8080)
VERSION = os.environ.get("OUTPOST_TEST_IMAGE_VERSION", "")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/healthz":
            self._reply(200, {"status": "ok", "version": VERSION, "port": PORT})
        else:
            self._reply(404, {"error": "not found", "path": self.path})

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if self.path != "/healthz" or os.environ.get("LOG_HEALTHZ"):
            super().log_message(format, *args)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
server = ThreadingHTTPServer((BIND, PORT), Handler)
server.daemon_threads = True
print(f"http: listening on {BIND}:{PORT} (image version {VERSION})", flush=True)
server.serve_forever()
