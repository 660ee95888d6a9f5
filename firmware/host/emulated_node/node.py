"""The emulated node's board loop: what ``main/app_main.cpp`` does on the ESP32, on the host.

Each window: sample, hand it to the core, drive the servo with the duty the core decided, apply
what arrived from the hub (desired properties, direct methods), send the core's queue while the
hub is reachable, and move an OTA download forward. The core decides; this loop moves bytes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulated_node.adapters.http_client import TransportError, get_range, post_json
from emulated_node.adapters.mqtt_link import Incoming, MqttLink
from emulated_node.core import ActivationState, NodeCore, WindowResult
from emulated_node.sensor import Sensor

log = logging.getLogger("emulated-node")

REPO = Path(__file__).resolve().parents[3]
FACTORY_MODEL = REPO / "modules" / "anomaly-detector" / "anomaly_detector" / "models" / "motor-v1.tflite"
CREDENTIAL_FILE = "credential"  # 0600, like the board's NVS entry


def desired_topic(device: str) -> str:
    return f"devices/{device}/twin/desired"


def reported_topic(device: str) -> str:
    return f"devices/{device}/twin/reported"


def methods_topic(device: str) -> str:
    return f"devices/{device}/methods"


@dataclass
class NodeSettings:
    device_id: str
    state_dir: Path
    hub_host: str = "127.0.0.1"
    hub_port: int = 1883
    windows_per_second: float = 2.0
    activation_url: str = ""  # the fleet's activation API, or the hub's
    activation_key: str = ""
    credential: str = ""  # a pre-provisioned credential (skips activation)
    factory_model: Path = FACTORY_MODEL
    factory_version: str = "1"
    max_sends_per_window: int = 64


@dataclass
class NodeStatus:
    """What the loop observed, for tests, logs and ``--json``."""

    windows: int = 0
    sent: int = 0
    duty: int = 0
    valve_open: bool = False
    valve_moves: list[tuple[int, bool, bool]] = field(default_factory=list)  # (window, open, connected)
    last: WindowResult | None = None
    desired_errors: list[str] = field(default_factory=list)


class EmulatedNode:
    """One node: the core plus the host board layer."""

    def __init__(self, settings: NodeSettings, core: NodeCore, sensor: Sensor) -> None:
        self.settings = settings
        self.core = core
        self.sensor = sensor
        self.status = NodeStatus()
        self.link: MqttLink | None = None
        self.lock = threading.Lock()  # the core is single-threaded: everything goes through here
        self._boot_ms = int(time.monotonic() * 1000)

    # -- boot --
    def _now_ms(self) -> int:
        return int(time.monotonic() * 1000) - self._boot_ms

    def boot(self) -> None:
        """Flash the factory model on the first boot, then start activation from what flash holds."""
        if not self.core.model_loaded:
            model = self.settings.factory_model.read_bytes()
            if not self.core.install_factory(model, self.settings.factory_version):
                raise RuntimeError(f"factory model {self.settings.factory_model} does not load: {self.core.load_error}")
        stored = self.settings.credential or self._read_credential()
        self.core.activation_start(self.settings.activation_url, self.settings.activation_key, stored, self._now_ms())

    def _read_credential(self) -> str:
        path = self.settings.state_dir / CREDENTIAL_FILE
        return path.read_text().strip() if path.exists() else ""

    def _persist_credential(self) -> None:
        credential, changed = self.core.activation_credential()
        if not changed:
            return
        path = self.settings.state_dir / CREDENTIAL_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(credential)
        os.replace(tmp, path)

    def activate_step(self) -> ActivationState:
        """One step of activation: send the request when the core says it is due."""
        now = self._now_ms()
        if self.core.activation_due(now):
            url = self.settings.activation_url
            try:
                status, body = post_json(url, self.core.activation_body())
            except TransportError as exc:
                log.info("activation endpoint %s unreachable (%s)", url, exc)
                self.core.activation_transport_error(now)
            else:
                state = self.core.activation_response(status, body, now)
                log.info("activation: HTTP %d -> %s", status, state.name.lower())
        self._persist_credential()
        return self.core.activation_state

    def connect(self) -> MqttLink:
        credential, _ = self.core.activation_credential()
        device = self.settings.device_id
        self.link = MqttLink(
            self.settings.hub_host,
            self.settings.hub_port,
            device,
            credential,
            subscriptions=(f"{desired_topic(device)}/#", f"{methods_topic(device)}/#"),
        )
        return self.link

    # -- one window --
    def step(self) -> WindowResult:
        with self.lock:
            self._handle_incoming()
            result = self.core.process(self.sensor.next_window(), time.time())
            self._drive_servo(result)
            self._flush()
            self._ota_step()
            self._persist_credential()
            self._report_changes()
            return result

    def _drive_servo(self, result: WindowResult) -> None:
        # The board writes result.duty to the LEDC channel; here the duty is recorded.
        status = self.status
        status.windows += 1
        status.last = result
        status.duty = result.duty
        if result.valve_changed or result.valve_open != status.valve_open:
            connected = bool(self.link and self.link.connected)
            status.valve_moves.append((status.windows, result.valve_open, connected))
            log.warning(
                "valve %s (score %.3f, duty %d, hub %s)",
                "OPEN" if result.valve_open else "closed",
                result.score or 0.0,
                result.duty,
                "connected" if connected else "unreachable",
            )
        status.valve_open = result.valve_open

    def _flush(self) -> None:
        link = self.link
        if link is None:
            return
        if link.refused.is_set():  # the hub no longer accepts our credential
            link.refused.clear()
            self.core.activation_credential_refused(self._now_ms())
            log.warning("the hub refused the node's credential: %s", self.core.activation_error())
            return
        for _ in range(self.settings.max_sends_per_window):
            item = self.core.peek()
            if item is None or not link.publish(*item):
                return
            self.core.pop()
            self.status.sent += 1

    def _handle_incoming(self) -> None:
        link = self.link
        if link is None:
            return
        device = self.settings.device_id
        changed = False
        while not link.incoming.empty():
            message: Incoming = link.incoming.get_nowait()
            if message.topic.startswith(desired_topic(device)):
                error = self.core.desired(message.payload)
                if error:
                    log.error("desired properties refused: %s", error)
                    self.status.desired_errors.append(error)
                changed = True
            elif message.topic.startswith(methods_topic(device) + "/"):
                name = message.topic[len(methods_topic(device)) + 1 :]
                status, body = self.core.method(name, message.payload)
                if message.response_topic:
                    link.respond(message.response_topic, message.correlation, status, body)
                changed = True
        if changed:
            self.report()

    def report(self) -> None:
        if self.link is not None:
            doc = self.core.reported()
            if self.link.publish(reported_topic(self.settings.device_id), json.dumps(doc).encode()):
                self._reported_state = self._state_of(doc)

    @staticmethod
    def _state_of(doc: dict[str, Any]) -> str:
        """The reported properties that matter to the gateway (not the counters)."""
        return json.dumps({k: doc.get(k) for k in ("model", "activation", "valve", "decision")}, sort_keys=True)

    def _report_changes(self) -> None:
        """Report when the model, activation, valve or decision changed (or was never reported)."""
        if (
            self.link is not None
            and self.link.connected
            and self._state_of(self.core.reported()) != self._reported_state
        ):
            self.report()

    _reported_state = ""

    def _ota_step(self) -> None:
        pending = self.core.ota_next()
        if pending is None:
            return
        url = self.core.ota_url()
        for _ in range(16):  # a few chunks per window: the window rate stays steady
            nxt = self.core.ota_next()
            if nxt is None:
                break
            offset, length = nxt
            try:
                data = get_range(url, offset, length)
            except TransportError as exc:
                self.core.ota_error(str(exc))
                log.warning("model download: %s", exc)
                break
            if not data:
                self.core.ota_error("empty response")
                break
            self.core.ota_chunk(offset, data)
        self.report()

    # -- running --
    def run(self, stop: threading.Event) -> None:
        period = 1.0 / self.settings.windows_per_second
        next_at = time.monotonic()
        while not stop.is_set():
            self.step()
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
        self.core.close()

    def describe(self) -> dict[str, Any]:
        with self.lock:
            doc = self.core.reported()
        doc["connected"] = bool(self.link and self.link.connected)
        doc["sent"] = self.status.sent
        return doc
