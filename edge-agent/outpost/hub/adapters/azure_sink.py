"""The Azure IoT Hub upstream sink: the hub's side of the ``modules/azure-bridge`` protocol.

Built by ``outpost.hub.upstream.sink_from_settings``; called by the hub's upstream pump.

``azure-iot-device`` pins ``paho-mqtt<2`` while Outpost uses paho-mqtt 2, so the Azure client runs
in its own module (``modules/azure-bridge``, its own environment or image). This sink talks to it
over TCP on the loopback (default ``127.0.0.1:8890``) with JSON lines, one request and one reply
per line, the connection closed after each exchange:

- ``{"op": "ping", "connectionStringEnv": NAME}`` ->
  ``{"ok": true, "connected": BOOL, "detail": STR}`` (connected: to IoT Hub; a ping also makes a
  disconnected bridge try to connect again, in the background).
- ``{"op": "send", "connectionStringEnv": NAME, "timeout": SECONDS, "messages": [M, ...]}`` with
  ``M`` = ``AzureFields.to_wire(seq)`` (``data`` base64) -> ``{"ok": true, "succeeded": [seq...],
  "retryable": [seq...], "invalid": [[seq, why]...], "failure": KIND, "detail": STR}``. The bridge
  sends in order and reports a seq succeeded only after IoT Hub acknowledged it; it finishes
  within ``timeout``. ``NAME`` is the manifest's ``connectionStringEnv``: the bridge reads the
  connection string from its own environment, so no secret crosses this link.
- ``{"ok": false, "error": STR}`` answers a request the bridge could not read.

A seq the reply does not mention is retryable; a bridge that does not answer makes the whole
batch retryable (``UNREACHABLE``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from outpost.hub.sinks import FailureKind, SinkResult, never_raise
from outpost.hub.store import Stored
from outpost.hub.upstream import DEFAULT_AZURE_BRIDGE, azure_fields

__all__ = ["AzureSink", "parse_address"]

log = logging.getLogger(__name__)
_MAX_REPLY = 16 * 1024 * 1024


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"azure-bridge address {address!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


class AzureSink:
    """Delivers ``$upstream`` batches to IoT Hub through the azure-bridge module."""

    name = "azure"

    def __init__(
        self,
        bridge: str = DEFAULT_AZURE_BRIDGE,
        *,
        connection_string_env: str,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        probe_interval: float = 1.0,
    ) -> None:
        self._address = parse_address(bridge)
        self._env = connection_string_env
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._probe_interval = probe_interval
        self._healthy = False
        self._last_probe = 0.0
        self._lock = threading.Lock()
        self._closed = False

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        result = SinkResult()
        if not batch:
            return result
        with self._lock, never_raise("azure", batch, result):
            self._send(batch, result)
        return result

    def connected(self) -> bool:
        if self._healthy:
            return True
        now = time.monotonic()
        if self._closed or now - self._last_probe < self._probe_interval:
            return False
        self._last_probe = now
        try:
            reply = self._exchange({"op": "ping", "connectionStringEnv": self._env}, timeout=self._connect_timeout)
        except (OSError, ValueError):
            return False
        return bool(reply.get("connected"))

    def close(self) -> None:
        self._closed = True

    # --- internals -------------------------------------------------------------------------

    def _send(self, batch: Sequence[Stored], result: SinkResult) -> None:
        seqs = [item.seq for item in batch]
        if self._closed:
            result.retryable.extend(seqs)
            result.failure, result.detail = FailureKind.INTERNAL, "sink closed"
            return
        bridge_timeout = max(self._timeout - 2.0, 1.0)
        request = {
            "op": "send",
            "connectionStringEnv": self._env,
            "timeout": bridge_timeout,
            "messages": [azure_fields(item.message).to_wire(item.seq) for item in batch],
        }
        try:
            reply = self._exchange(request, timeout=self._timeout)
        except (OSError, ValueError) as exc:
            self._healthy = False
            result.retryable.extend(seqs)
            host, port = self._address
            result.failure = FailureKind.UNREACHABLE
            result.detail = f"azure-bridge at {host}:{port}: {type(exc).__name__}: {exc}"
            return
        if not reply.get("ok"):
            result.retryable.extend(seqs)
            result.failure, result.detail = FailureKind.INTERNAL, f"azure-bridge: {reply.get('error')}"
            return
        self._read_reply(reply, seqs, result)

    def _read_reply(self, reply: dict[str, Any], seqs: list[int], result: SinkResult) -> None:
        known = set(seqs)
        decided: set[int] = set()
        for seq in reply.get("succeeded") or []:
            if seq in known and seq not in decided:
                decided.add(seq)
                result.succeeded.append(seq)
        for entry in reply.get("invalid") or []:
            seq, why = (entry[0], str(entry[1])) if isinstance(entry, list) and len(entry) == 2 else (None, "")
            if seq in known and seq not in decided:
                decided.add(seq)
                result.invalid.append((seq, why))
        result.retryable.extend(seq for seq in seqs if seq not in decided)
        try:
            failure = FailureKind(reply.get("failure") or "none")
        except ValueError:
            failure = FailureKind.INTERNAL
        if result.retryable and failure in {FailureKind.NONE, FailureKind.INVALID}:
            failure = FailureKind.INTERNAL
        result.failure, result.detail = failure, str(reply.get("detail") or "")
        self._healthy = failure is not FailureKind.UNREACHABLE and bool(result.succeeded or not result.retryable)

    def _exchange(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """One request line, one reply line. Raises OSError (link) or ValueError (bad reply)."""
        deadline = time.monotonic() + timeout
        with socket.create_connection(self._address, timeout=self._connect_timeout) as sock:
            sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            chunks: list[bytes] = []
            size = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no reply within {timeout:g} s")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the bridge closed the connection without a reply")
                chunks.append(chunk)
                size += len(chunk)
                if chunk.endswith(b"\n") or b"\n" in chunk:
                    break
                if size > _MAX_REPLY:
                    raise ValueError("reply too long")
        line = b"".join(chunks).split(b"\n", 1)[0]
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError("reply is not a JSON object")
        return reply
