"""Pytest plugin: a real Mosquitto broker per test, supervised by ``MosquittoSupervisor``.

Register with ``pytest_plugins = ["integration.conftest_mosquitto"]`` in ``tests/conftest.py``.
``scripts/services/mosquitto.sh`` runs once per session and must succeed (a failure fails the
tests, it never skips them). Each broker listens on 127.0.0.1 on a free port (never 1883).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from outpost.hub.acl import HUB_USER, BrokerIdentities, identities_for
from outpost.hub.adapters.mosquitto import MosquittoSupervisor, load_hub_password
from outpost.hub.broker import BrokerConfig, TlsListener
from outpost.wire.adapters.paho_link import close_sockets
from outpost.wire.credentials import device_key

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services" / "mosquitto.sh"
DEVICE = "dev1"
DEFAULT_MODULES = ("alpha", "beta", "gamma")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def mosquitto_installed() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"{SCRIPT} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}", pytrace=False)


@dataclass
class Broker:
    """A running broker: where it listens and who may connect."""

    supervisor: MosquittoSupervisor
    state_dir: Path
    identities: BrokerIdentities
    host: str = "127.0.0.1"
    device: str = DEVICE
    clients: list[Raw] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.supervisor.config.port

    @property
    def tls_port(self) -> int | None:
        tls = self.supervisor.config.tls
        return None if tls is None else tls.port

    @property
    def hub_password(self) -> str:
        return self.identities.hub_password

    def password(self, user: str) -> str:
        return self.identities.users()[user]

    def raw(self, user: str | None, password: str | None = None, **kwargs: Any) -> Raw:
        """A plain paho MQTT 5 client (closed by the fixture); ``password`` defaults to the user's."""
        if password is None and user is not None:
            password = self.password(user)
        client = Raw(self.host, kwargs.pop("port", self.port), user, password, **kwargs)
        self.clients.append(client)
        return client


def start_broker(
    state_dir: Path,
    modules: Sequence[str] = DEFAULT_MODULES,
    leaves: Sequence[str] = (),
    *,
    tls: bool = False,
) -> Broker:
    key = device_key(state_dir)
    identities = identities_for(DEVICE, key, load_hub_password(state_dir), modules, leaves)
    config = BrokerConfig(port=free_port(), tls=TlsListener(port=free_port(), host="127.0.0.1") if tls else None)
    supervisor = MosquittoSupervisor(state_dir, config, identities, backoff=(0.1, 1.0))
    supervisor.start()
    return Broker(supervisor, state_dir, identities)


@pytest.fixture
def broker_factory(mosquitto_installed: None, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """``make(modules=..., leaves=..., tls=False) -> Broker``; everything is stopped after the test."""
    brokers: list[Broker] = []

    def make(modules: Sequence[str] = DEFAULT_MODULES, leaves: Sequence[str] = (), *, tls: bool = False) -> Broker:
        broker = start_broker(tmp_path / f"hub{len(brokers)}", modules, leaves, tls=tls)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        for client in broker.clients:
            client.close()
        broker.supervisor.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A broker for modules alpha, beta, gamma on device ``dev1``."""
    return broker_factory()


class Raw:
    """A minimal paho MQTT 5 client recording everything, for tests that check the broker itself.

    Manual acks are off unless ``manual_ack=True``. ``on_connect`` re-subscribes (so a test hub
    survives broker restarts).
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        ca_file: Path | None = None,
        will: tuple[str, bytes] | None = None,
        reconnect: bool = True,
    ) -> None:
        self.lock = threading.Condition()
        self.connacks: list[int] = []
        self.subacks: dict[int, list[int]] = {}
        self.pubacks: dict[int, int] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscriptions: list[str] = []
        self.on_message: Callable[[mqtt.MQTTMessage], None] | None = None
        cid = client_id or f"raw-{user}-{time.monotonic_ns()}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cid,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=reconnect,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._connected
        self.client.on_subscribe = self._subscribed
        self.client.on_publish = self._published
        self.client.on_message = self._message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        self._started = False
        self.connect_error: Exception | None = None
        try:
            self.client.connect(host, port, clean_start=False, properties=props)
        except OSError as exc:  # TLS handshake failures end here
            self.connect_error = exc
            close_sockets(self.client)
            return
        self.client.loop_start()
        self._started = True

    def _connected(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self.lock:
            self.connacks.append(rc.value)
            topics = list(self.subscriptions)
            self.lock.notify_all()
        if rc.value == 0 and topics:
            self.client.subscribe([(t, 1) for t in topics])

    def _subscribed(self, _c: Any, _u: Any, mid: int, rcs: list[Any], _p: Any) -> None:
        with self.lock:
            self.subacks[mid] = [rc.value for rc in rcs]
            self.lock.notify_all()

    def _published(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self.lock:
            self.pubacks[mid] = rc.value
            self.lock.notify_all()

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)
            self.lock.notify_all()
        if self.on_message is not None:
            self.on_message(msg)

    def wait_connack(self, timeout: float = 10.0) -> int:
        with self.lock:
            if not self.lock.wait_for(lambda: self.connacks, timeout):
                pytest.fail("no CONNACK")
            return self.connacks[-1]

    def subscribe(self, topic: str, timeout: float = 10.0) -> list[int]:
        """Subscribe at QoS 1 (remembered for reconnects); returns the SUBACK reason codes."""
        self.wait_connack(timeout)  # else on_connect would subscribe a second time (retained twice)
        # paho calls back while holding its own locks: never call paho while holding self.lock
        with self.lock:
            self.subscriptions.append(topic)
        _, mid = self.client.subscribe(topic, qos=1)
        with self.lock:
            if not self.lock.wait_for(lambda: mid in self.subacks, timeout):
                pytest.fail(f"no SUBACK for {topic}")
            return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 10.0, **props: Any) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 = accepted, 0x87 = not authorized)."""
        properties = Properties(PacketTypes.PUBLISH)
        for name, value in props.items():
            setattr(properties, name, value)
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        with self.lock:
            if not self.lock.wait_for(lambda: info.mid in self.pubacks, timeout):
                pytest.fail(f"no PUBACK for {topic}")
            return self.pubacks.pop(info.mid)

    def received(self, topic_prefix: str = "") -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic.startswith(topic_prefix)]

    def close(self) -> None:
        if self._started:
            self._started = False
            self.client.disconnect()
            self.client.loop_stop()
            close_sockets(self.client)


__all__ = [
    "DEFAULT_MODULES",
    "DEVICE",
    "HUB_USER",
    "Broker",
    "Raw",
    "broker",
    "broker_factory",
    "free_port",
    "mosquitto_installed",
    "start_broker",
    "wait_for",
]
