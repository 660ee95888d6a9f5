"""azure-bridge: forwards the Outpost hub's ``$upstream`` batches to Azure IoT Hub.

Runs in its own environment (``requirements.txt``: azure-iot-device, which pins paho-mqtt<2, so
it cannot live next to Outpost's paho-mqtt 2). The hub's ``AzureSink``
(``edge-agent/outpost/hub/adapters/azure_sink.py``, where the protocol is specified) connects to
this process over TCP on the loopback and exchanges one JSON line each way:

- ``ping`` -> whether the IoT Hub client is connected (and, if not, a background connect attempt);
- ``send`` -> the batch is sent in order with ``send_message`` / ``send_message_to_output``; a
  seq is reported succeeded only after IoT Hub acknowledged it (the SDK's call returned). A
  refused message (``ValueError``: over 256 KB, bad property) is invalid; a connection,
  timeout or credential failure stops the batch: that message and the rest are retryable.

The connection string is read from the environment variable the request names (the manifest's
``outpost.upstream.azure.connectionStringEnv``); a string with ``ModuleId=`` makes an
``IoTHubModuleClient``, otherwise an ``IoTHubDeviceClient``.

Environment: ``OUTPOST_AZURE_BRIDGE_LISTEN`` (default ``127.0.0.1:8890``),
``OUTPOST_AZURE_BRIDGE_OP_TIMEOUT`` seconds per IoT Hub call (default 20),
``OUTPOST_AZURE_BRIDGE_RETRY_SECS`` between background connect attempts (default 5).
Standard library only, apart from azure-iot-device (imported when the first client is made).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("azure-bridge")

DEFAULT_LISTEN = "127.0.0.1:8890"
MAX_REQUEST = 64 * 1024 * 1024
#: Exception class names (azure.iot.device.exceptions) by what they mean for the batch.
UNREACHABLE = {
    "ConnectionFailedError",
    "ConnectionDroppedError",
    "NoConnectionError",
    "OperationTimeout",
    "OperationCancelled",
    "TimeoutError",
    "ConnectionError",
    "OSError",
}
THROTTLED: set = set()
INTERNAL = {"CredentialError", "ServiceError", "ClientError"}

ClientFactory = Callable[[str], Any]


def azure_client(connection_string: str) -> Any:
    """The real IoT Hub client for a connection string (no automatic retries: the hub's pump retries)."""
    from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient

    cls = IoTHubModuleClient if "ModuleId=" in connection_string else IoTHubDeviceClient
    return cls.create_from_connection_string(connection_string, connection_retry=False, keep_alive=60)


def azure_message(wire: dict[str, Any]) -> Any:
    from azure.iot.device import Message

    return build_message(Message, wire)


def build_message(message_cls: Any, wire: dict[str, Any]) -> Any:
    """An ``azure.iot.device.Message`` (or a stand-in class) from one wire message."""
    msg = message_cls(
        base64.b64decode(wire["data"]),
        message_id=wire.get("message_id"),
        content_encoding=wire.get("content_encoding"),
        content_type=wire.get("content_type"),
        output_name=wire.get("output_name"),
    )
    msg.custom_properties = dict(wire.get("custom_properties") or {})
    if wire.get("correlation_id") is not None:
        msg.correlation_id = wire["correlation_id"]
    if wire.get("user_id") is not None:
        msg.user_id = wire["user_id"]
    return msg


def classify(exc: BaseException) -> str:
    """``invalid`` / ``unreachable`` / ``throttled`` / ``internal`` for an SDK exception."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid"
    if names & UNREACHABLE:
        return "unreachable"
    if names & THROTTLED:
        return "throttled"
    return "internal"


class Bridge:
    """One IoT Hub client per connection-string variable; sends are serialised."""

    def __init__(
        self,
        *,
        client_factory: ClientFactory = azure_client,
        message_factory: Callable[[dict[str, Any]], Any] = azure_message,
        environ: dict[str, str] | None = None,
        op_timeout: float = 20.0,
        retry_secs: float = 5.0,
    ) -> None:
        self._client_factory = client_factory
        self._message_factory = message_factory
        self._environ = os.environ if environ is None else environ
        self._op_timeout = op_timeout
        self._retry_secs = retry_secs
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_env: str | None = None
        self._connected = False
        self._detail = "not connected yet"
        self._last_attempt = 0.0
        self._connecting = False

    # --- requests --------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        env = request.get("connectionStringEnv")
        if not isinstance(env, str) or not env:
            return {"ok": False, "error": "connectionStringEnv missing"}
        if op == "ping":
            connected, detail = self._connected, self._detail
            if not connected:
                self._connect_in_background(env)
            return {"ok": True, "connected": connected, "detail": detail}
        if op == "send":
            messages = request.get("messages")
            if not isinstance(messages, list):
                return {"ok": False, "error": "messages missing"}
            timeout = float(request.get("timeout") or 28.0)
            with self._lock:
                return self._send(env, messages, time.monotonic() + timeout)
        return {"ok": False, "error": f"unknown op {op!r}"}

    def close(self) -> None:
        with self._lock:
            self._drop_client()

    # --- internals -------------------------------------------------------------------------

    def _send(self, env: str, messages: list[dict[str, Any]], deadline: float) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "ok": True,
            "succeeded": [],
            "retryable": [],
            "invalid": [],
            "failure": "none",
            "detail": "",
        }
        seqs = [m.get("seq") for m in messages]
        try:
            client = self._ensure_connected(env, deadline)
        except Exception as exc:
            return self._stop(reply, seqs, exc)
        for index, wire in enumerate(messages):
            seq = wire.get("seq")
            try:
                message = self._message_factory(wire)
            except (KeyError, ValueError, TypeError) as exc:
                reply["invalid"].append([seq, f"bad message: {exc}"])
                continue
            output = wire.get("output_name")
            try:
                if output and hasattr(client, "send_message_to_output"):
                    self._call(functools.partial(client.send_message_to_output, message, output), deadline)
                else:
                    self._call(functools.partial(client.send_message, message), deadline)
            except Exception as exc:
                kind = classify(exc)
                if kind == "invalid":
                    reply["invalid"].append([seq, f"{type(exc).__name__}: {exc}"])
                    continue
                return self._stop(reply, seqs[index:], exc)
            reply["succeeded"].append(seq)
        if reply["invalid"]:
            reply["failure"], reply["detail"] = "invalid", reply["invalid"][0][1]
        return reply

    def _stop(self, reply: dict[str, Any], rest: list[Any], exc: BaseException) -> dict[str, Any]:
        kind = classify(exc)
        reply["retryable"].extend(rest)
        reply["failure"] = "internal" if kind == "invalid" else kind
        reply["detail"] = f"{type(exc).__name__}: {exc}"
        self._detail = reply["detail"]
        self._connected = False
        self._drop_client()  # a fresh client next time
        log.warning("IoT Hub send failed (%s): %s", reply["failure"], reply["detail"])
        return reply

    def _ensure_connected(self, env: str, deadline: float) -> Any:
        if self._client is not None and self._client_env == env and self._connected:
            return self._client
        self._drop_client()
        connection_string = self._environ.get(env)
        if not connection_string:
            raise LookupError(f"environment variable {env} (connectionStringEnv) is not set in the bridge")
        client = self._client_factory(connection_string)
        self._client, self._client_env = client, env
        self._last_attempt = time.monotonic()
        self._call(client.connect, deadline)
        self._connected, self._detail = True, "connected"
        return client

    def _call(self, fn: Callable[[], Any], deadline: float) -> None:
        """Run a blocking SDK call with a deadline (the SDK's own waits can be long)."""
        timeout = min(self._op_timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise TimeoutError("the batch's deadline passed")
        box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))

        worker = threading.Thread(target=run, name="iothub-call", daemon=True)
        worker.start()
        worker.join(timeout)
        if not box:
            raise TimeoutError(f"IoT Hub did not answer within {timeout:.1f} s")
        ok, value = box[0]
        if not ok:
            raise value

    def _connect_in_background(self, env: str) -> None:
        now = time.monotonic()
        if self._connecting or now - self._last_attempt < self._retry_secs:
            return
        self._connecting = True
        self._last_attempt = now

        def attempt() -> None:
            try:
                with self._lock:
                    self._ensure_connected(env, time.monotonic() + self._op_timeout)
            except Exception as exc:
                self._connected, self._detail = False, f"{type(exc).__name__}: {exc}"
                self._drop_client()
            finally:
                self._connecting = False

        threading.Thread(target=attempt, name="iothub-connect", daemon=True).start()

    def _drop_client(self) -> None:
        client, self._client, self._client_env = self._client, None, None
        self._connected = False
        if client is not None:
            threading.Thread(target=_quietly, args=(client.shutdown,), name="iothub-shutdown", daemon=True).start()


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # shutting down a broken client may fail; nothing to do
        fn()


class _Handler(socketserver.StreamRequestHandler):
    server: BridgeServer

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST + 1)
        if not line:
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            reply = self.server.bridge.handle(request)
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        self.wfile.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")


class BridgeServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], bridge: Bridge) -> None:
        self.bridge = bridge
        super().__init__(address, _Handler)


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure.iot.device").setLevel(logging.WARNING)  # its INFO logs every connect step
    listen = parse_listen(os.environ.get("OUTPOST_AZURE_BRIDGE_LISTEN", DEFAULT_LISTEN))
    bridge = Bridge(
        op_timeout=float(os.environ.get("OUTPOST_AZURE_BRIDGE_OP_TIMEOUT", "20")),
        retry_secs=float(os.environ.get("OUTPOST_AZURE_BRIDGE_RETRY_SECS", "5")),
    )
    server = BridgeServer(listen, bridge)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"azure-bridge listening on {listen[0]}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        bridge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
