"""``outpost.sdk.ModuleClient`` through a real Mosquitto, with the test playing the hub.

``FakeHub`` connects as the hub user: it reads module outputs, forwards them to module inputs
(routes given by the test) and publishes receipts when ``receipting`` is set; it records acks,
reported properties and status. Waits are bounded; nothing asserts on speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from integration.conftest_mosquitto import DEVICE, HUB_USER, Broker, wait_for
from outpost.sdk import (
    ConnectError,
    InputMessage,
    MethodTimeoutError,
    ModuleClient,
    NotAuthorizedError,
    OutboxFullError,
)
from outpost.wire import batch as batches
from outpost.wire import topics

Route = dict[tuple[str, str], tuple[str, str]]  # (module, output) -> (module, input)


class FakeHub:
    """Just enough of the hub's router for the SDK: forward, receipt, record."""

    def __init__(self, broker: Broker, routes: Route | None = None, *, receipting: bool = True) -> None:
        self.routes = routes or {}
        self.receipting = threading.Event()
        if receipting:
            self.receipting.set()
        self.lock = threading.Lock()
        self.outputs: list[tuple[str, str, str]] = []  # (module, output, message id)
        self.acks: list[tuple[str, list[str]]] = []
        self.reported: list[tuple[str, Any]] = []
        self.status: dict[str, bytes] = {}
        self.on_ack: Callable[[str, list[str]], None] | None = None
        self.raw = broker.raw(HUB_USER, client_id="fake-hub")
        self.raw.on_message = self._message
        self.raw.wait_connack()
        for sub in ("outputs/#", "batch/outputs", "acks", "twin/reported", "status"):
            self.raw.subscribe(f"devices/{DEVICE}/modules/+/{sub}")
        self.batches = 0  # batch PUBLISHes received

    def _message(self, msg: mqtt.MQTTMessage) -> None:  # paho's thread: publish, never wait
        parts = msg.topic.split("/")
        module, kind = parts[3], parts[4]
        if kind == "outputs":
            pairs = [(str(k), str(v)) for k, v in getattr(msg.properties, "UserProperty", [])]
            self._output(module, parts[5], pairs, msg.payload)
        elif kind == "batch":
            self.batches += 1
            for item in batches.decode(msg.payload):
                self._output(module, item.name, list(item.user_properties), item.body)
        elif kind == "acks":
            # the SDK acks INPUT/ID (one message routed to two inputs is two deliveries)
            ids = [key.split("/", 1)[1] for key in json.loads(msg.payload)]
            with self.lock:
                self.acks.append((module, ids))
            if self.on_ack is not None:
                self.on_ack(module, ids)
        elif kind == "twin":
            with self.lock:
                self.reported.append((module, json.loads(msg.payload)))
        elif kind == "status":
            with self.lock:
                self.status[module] = msg.payload

    def _output(self, module: str, output: str, pairs: list[tuple[str, str]], body: bytes) -> None:
        mid = dict(pairs)["$.mid"]
        with self.lock:
            self.outputs.append((module, output, mid))
        target = self.routes.get((module, output))
        if target is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [*pairs, ("$.cdid", DEVICE), ("$.cmid", module)]
            self.raw.client.publish(topics.input_topic(DEVICE, *target), body, qos=1, properties=props)
        if self.receipting.is_set():
            self.raw.client.publish(topics.receipts(DEVICE, module), json.dumps([mid]), qos=1)

    def output_ids(self, module: str) -> list[str]:
        with self.lock:
            return [mid for m, _, mid in self.outputs if m == module]

    def acked(self, module: str) -> list[str]:
        with self.lock:
            return [i for m, ids in self.acks if m == module for i in ids]

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, **props: Any) -> None:
        assert (
            self.raw.publish(topic, payload.encode() if isinstance(payload, str) else payload, retain=retain, **props)
            < 0x80
        )


@pytest.fixture
def clients(broker: Broker) -> Iterator[Callable[..., ModuleClient]]:
    """``make(module, **kwargs)``: a connected ModuleClient for ``module``; all closed after the test."""
    made: list[ModuleClient] = []

    def make(module: str, *, connect: bool = True, **kwargs: Any) -> ModuleClient:
        kwargs.setdefault("password", broker.password(kwargs.get("username") or module))
        client = ModuleClient(device_id=DEVICE, module_id=module, host=broker.host, port=broker.port, **kwargs)
        made.append(client)
        if connect:
            client.connect(timeout=10)
        return client

    yield make
    for client in made:
        client.close()


class Received:
    """An input handler that records what it handled."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.messages: list[InputMessage] = []

    def __call__(self, message: InputMessage) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.messages.append(message)

    def ids(self) -> list[str]:
        with self.lock:
            return [m.id for m in self.messages]


def kill_broker(broker: Broker) -> None:
    """kill -9 the broker and wait for the supervisor to bring it back."""
    pid = broker.supervisor.pid
    assert pid is not None
    restarts = broker.supervisor.restarts
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: broker.supervisor.restarts > restarts, what="the supervisor to restart the broker")
    broker.supervisor.wait_running(timeout=15)


def test_send_is_released_by_receipts_and_delivered_with_properties(broker: Broker, clients) -> None:
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")})
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)
    alpha = clients("alpha")
    ids = [
        alpha.send("out1", {"temperature": 21.5}, {"unit": "C"}),
        alpha.send("out1", "plain text"),
        alpha.send("out1", b"\x00\x01", content_type="application/octet-stream"),
    ]
    alpha.flush(timeout=10)
    assert alpha.pending == 0
    wait_for(lambda: received.ids() == ids, what="beta to handle the three messages")
    first, text, raw = received.messages
    assert first.json() == {"temperature": 21.5}
    assert first.properties == {"unit": "C"}
    assert first.system["contentType"] == "application/json"
    assert first.system["contentEncoding"] == "utf-8"
    assert first.system["connectionModuleId"] == "alpha"
    assert first.input_name == "in1"
    assert text.text() == "plain text"
    assert raw.body == b"\x00\x01"
    assert raw.content_type == "application/octet-stream"
    assert hub.output_ids("alpha") == ids
    wait_for(lambda: hub.status.get("alpha") == b"online", what="alpha's online status")


def test_acks_are_published_after_the_handler_returned(broker: Broker, clients) -> None:
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")})
    received = Received(delay=0.05)
    early: list[str] = []
    hub.on_ack = lambda _module, ids: early.extend(i for i in ids if i not in received.ids())
    beta = clients("beta")
    beta.on_input("in1", received)
    alpha = clients("alpha")
    ids = [alpha.send("out1", {"n": n}) for n in range(20)]
    wait_for(lambda: sorted(hub.acked("beta")) == sorted(ids), what="beta's acks")
    assert received.ids() == ids  # in order
    assert early == []


def test_outbox_full_raises_a_clear_error(broker: Broker, clients) -> None:
    FakeHub(broker, receipting=False)
    alpha = clients("alpha", max_outbox=3, send_timeout=0.3)
    for n in range(3):
        alpha.send("out1", {"n": n})
    with pytest.raises(OutboxFullError, match="outbox full"):
        alpha.send("out1", {"n": 3})
    assert alpha.pending == 3


def test_unreceipted_messages_survive_a_broker_crash(broker: Broker, clients) -> None:
    """kill -9 the broker while messages are unreceipted (some only in its memory): all arrive once."""
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")}, receipting=False)
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)
    alpha = clients("alpha", resend_after=1.0)

    delivered = [alpha.send("out1", {"n": n}) for n in range(10)]  # forwarded and handled, not receipted
    wait_for(lambda: received.ids() == delivered, what="the first ten at beta")
    hub.raw.close()  # the hub goes offline: the broker queues the next ten in memory only
    queued = [alpha.send("out1", {"n": n}) for n in range(10, 20)]
    wait_for(lambda: all(e.stored_at for e in list(alpha._outbox.values())), what="PUBACKs for all 20")
    assert alpha.pending == 20

    kill_broker(broker)  # before any autosave: the broker's queue for the hub is gone
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")}, receipting=True)
    alpha.flush(timeout=30)  # re-sent after the reconnect (and by the resend timer), then receipted
    wait_for(lambda: sorted(received.ids()) == sorted(delivered + queued), timeout=30, what="all twenty at beta")
    assert len(received.ids()) == 20  # the ten re-sent duplicates were dropped before the handler
    assert beta.duplicates >= 10
    assert alpha.resent >= 20
    assert set(queued) <= set(hub.output_ids("alpha"))
    wait_for(lambda: set(hub.acked("beta")) >= set(delivered + queued), what="beta's acks (again)")


def test_redelivered_ids_are_dropped_and_acked_again(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)
    for _ in range(3):
        hub.publish(topics.input_topic(DEVICE, "beta", "in1"), b"{}", UserProperty=[("$.mid", "m-1")])
    hub.publish(topics.input_topic(DEVICE, "beta", "in1"), b"{}", UserProperty=[("$.mid", "m-2")])
    wait_for(lambda: received.ids() == ["m-1", "m-2"], what="two distinct messages")
    wait_for(lambda: hub.acked("beta").count("m-1") >= 2, what="the duplicate to be acked again")
    assert received.ids() == ["m-1", "m-2"]


def test_auto_reconnect_resubscribes_and_reannounces(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)
    wait_for(lambda: hub.status.get("beta") == b"online", what="online")
    kill_broker(broker)
    wait_for(lambda: beta.connected, timeout=20, what="beta to reconnect")
    hub.publish(topics.input_topic(DEVICE, "beta", "in1"), b"{}", UserProperty=[("$.mid", "after")])
    wait_for(lambda: received.ids() == ["after"], what="delivery after the restart")
    late = broker.raw(HUB_USER)
    late.subscribe(topics.status(DEVICE, "beta"))
    wait_for(late.received, what="the retained status")
    assert [m.payload for m in late.received()] == [b"online"]


def test_close_says_offline_and_the_will_covers_a_crash(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    gamma = clients("gamma")
    wait_for(lambda: hub.status.get("gamma") == b"online", what="online")
    gamma.close()
    wait_for(lambda: hub.status.get("gamma") == b"offline", what="offline after close")

    code = textwrap.dedent(
        f"""
        import os
        from outpost.sdk import ModuleClient
        client = ModuleClient(device_id={DEVICE!r}, module_id="beta", password={broker.password("beta")!r},
                              host={broker.host!r}, port={broker.port})
        client.connect(timeout=10)
        os._exit(0)  # a crash: no DISCONNECT, no offline publish
        """
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 0
    wait_for(lambda: hub.status.get("beta") == b"offline", what="beta's will")


def test_desired_properties_full_then_patches_and_reported(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    doc = {"$version": 3, "threshold": 5, "nested": {"a": 1, "b": 2}}
    hub.publish(topics.desired(DEVICE, "beta"), json.dumps(doc), retain=True)
    beta = clients("beta")
    assert beta.twin(timeout=5) == doc
    patches: list[dict[str, Any]] = []
    beta.on_desired_change(patches.append)
    hub.publish(topics.desired_patch(DEVICE, "beta"), json.dumps({"$version": 2, "threshold": 0}))  # stale
    patch = {"$version": 4, "nested": {"b": None, "c": 3}, "mode": "fast"}
    hub.publish(topics.desired_patch(DEVICE, "beta"), json.dumps(patch))
    wait_for(lambda: patches == [patch], what="the patch handler")
    assert beta.twin() == {"$version": 4, "threshold": 5, "nested": {"a": 1, "c": 3}, "mode": "fast"}

    beta.report({"firmware": "1.2", "nested": {"ok": True}})
    wait_for(lambda: hub.reported == [("beta", {"firmware": "1.2", "nested": {"ok": True}})], what="reported")


def test_twin_times_out_clearly_without_a_hub(clients) -> None:
    beta = clients("beta")
    with pytest.raises(TimeoutError, match="no desired properties"):
        beta.twin(timeout=0.2)


def test_direct_methods_request_response_and_errors(broker: Broker, clients) -> None:
    beta = clients("beta")
    calls: list[Any] = []

    def reset(payload: Any) -> tuple[int, Any]:
        calls.append(payload)
        return 200, {"echo": payload}

    def broken(payload: Any) -> tuple[int, Any]:
        raise RuntimeError("boom")

    beta.on_method("reset", reset)
    beta.on_method("broken", broken)
    caller = clients("caller", username=HUB_USER)  # docs/hub.md: only the hub user may call methods
    assert caller.invoke_method("beta", "reset", {"n": 1}, timeout=10) == (200, {"echo": {"n": 1}})
    assert caller.invoke_method("beta", "reset", None, timeout=10) == (200, {"echo": None})
    assert calls == [{"n": 1}, None]
    status, payload = caller.invoke_method("beta", "nope", timeout=10)
    assert status == 501
    assert "not registered" in payload["message"]
    status, payload = caller.invoke_method("beta", "broken", timeout=10)
    assert (status, payload) == (500, {"message": "RuntimeError: boom"})

    alpha = clients("alpha")
    with pytest.raises(NotAuthorizedError, match="may not call direct methods"):
        alpha.invoke_method("beta", "reset", timeout=10)


def test_method_timeout(clients) -> None:
    caller = clients("caller", username=HUB_USER)
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises(MethodTimeoutError) as info:
        caller.invoke_method("gamma", "reset", {"x": 1}, timeout=timeout)  # gamma is not running
    elapsed = time.monotonic() - started
    assert timeout <= elapsed < timeout + 2.0
    assert (info.value.target, info.value.method) == ("gamma", "reset")


def test_refused_credentials_fail_connect_at_once(clients) -> None:
    client = clients("alpha", connect=False, password="wrong")
    with pytest.raises(ConnectError, match="refused 'alpha'"):
        client.connect(timeout=10)


def test_from_environment_connects(broker: Broker) -> None:
    env = {
        "IOTEDGE_MODULEID": "gamma",
        "OUTPOST_DEVICE_ID": DEVICE,
        "OUTPOST_HUB_HOST": broker.host,
        "OUTPOST_HUB_PORT": str(broker.port),
        "OUTPOST_MODULE_PASSWORD": broker.password("gamma"),
    }
    with ModuleClient.from_environment(env) as client:
        assert client.connected
        assert (client.device_id, client.module_id) == (DEVICE, "gamma")


def test_acks_name_the_input_so_one_message_on_two_inputs_is_two_deliveries(broker: Broker, clients) -> None:
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")})
    beta = clients("beta")
    first, second = Received(), Received()
    beta.on_input("in1", first)
    beta.on_input("in2", second)
    alpha = clients("alpha")
    message_id = alpha.send("out1", {"n": 1})
    wait_for(lambda: first.ids() == [message_id], what="the first delivery")
    # the same message id delivered to another input is not a duplicate there
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("$.mid", message_id), ("$.cdid", DEVICE), ("$.cmid", "alpha")]
    hub.raw.client.publish(topics.input_topic(DEVICE, "beta", "in2"), b"{}", qos=1, properties=props)
    wait_for(lambda: second.ids() == [message_id], what="the second delivery")
    wait_for(lambda: hub.acked("beta").count(message_id) == 2, what="one ack per input")


def test_a_burst_goes_out_as_batches_in_order_and_once(broker: Broker, clients) -> None:
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")})
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)
    alpha = clients("alpha")
    ids = [alpha.send("out1", {"n": n}, {"k": str(n)}) for n in range(3000)]
    alpha.flush(timeout=60)
    assert alpha.batches_sent > 0
    assert hub.batches == alpha.batches_sent
    assert hub.output_ids("alpha") == ids  # in order, each once, whether batched or not
    wait_for(lambda: received.ids() == ids, timeout=60, what="beta to handle all 3000")
    assert [m.properties["k"] for m in received.messages] == [str(n) for n in range(3000)]


def test_max_batch_1_sends_every_message_on_its_own(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    alpha = clients("alpha", max_batch=1)
    ids = [alpha.send("out1", {"n": n}) for n in range(500)]
    alpha.flush(timeout=30)
    assert alpha.batches_sent == 0
    assert hub.batches == 0
    assert hub.output_ids("alpha") == ids
    with pytest.raises(ValueError, match="max_batch must be between 1 and 250"):
        clients("gamma", connect=False, max_batch=0)


def test_batched_inputs_are_handled_in_order_deduplicated_and_acked_each(broker: Broker, clients) -> None:
    hub = FakeHub(broker)
    received = Received()
    beta = clients("beta")
    beta.on_input("in1", received)

    def framed(mid: str) -> batches.Framed:
        return batches.Framed("in1", (("$.mid", mid), ("$.cmid", "alpha")), "application/json", b'{"v":1}')

    batch_topic = topics.batch_inputs(DEVICE, "beta")
    hub.publish(batch_topic, batches.encode([framed("b-1"), framed("b-2"), framed("b-1")]))
    hub.publish(batch_topic, b"OPB1 garbage")  # unreadable: logged and ignored
    hub.publish(batch_topic, batches.encode([framed("b-3"), batches.Framed("nope", (("$.mid", "b-4"),), None, b"")]))
    wait_for(lambda: received.ids() == ["b-1", "b-2", "b-3"], what="three distinct batched inputs")
    wait_for(lambda: {"b-1", "b-2", "b-3"} <= set(hub.acked("beta")), what="an ack for each")
    assert "b-4" not in hub.acked("beta")  # no handler for input 'nope': left for the hub to resend
    assert beta.batches_received == 2
    assert beta.duplicates == 1
    assert received.messages[0].system["connectionModuleId"] == "alpha"


def test_online_status_announces_that_the_client_reads_batches(broker: Broker, clients) -> None:
    seen: list[list[tuple[str, str]]] = []
    raw = broker.raw(HUB_USER, client_id="status-reader")
    raw.on_message = lambda msg: seen.append([(str(k), str(v)) for k, v in getattr(msg.properties, "UserProperty", [])])
    raw.wait_connack()
    raw.subscribe(topics.status(DEVICE, "beta"))
    clients("beta")
    wait_for(lambda: any(batches.READS_BATCHES in pairs for pairs in seen), what="beta's online status")
    raw.close()
