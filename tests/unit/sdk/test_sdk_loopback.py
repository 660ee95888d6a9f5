"""ModuleClient over the in-memory loopback link: the SDK's protocol without a broker process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outpost.sdk import ModuleClient
from outpost.sdk.messages import InputMessage
from outpost.wire import batch as batches
from outpost.wire import topics
from outpost.wire.link import Event, Incoming, LinkSettings
from outpost.wire.loopback import LoopbackBroker, LoopbackLink, matches

DEVICE = "dev1"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


class FakeHub:
    """Just enough of the hub on the loopback broker: receipt outputs, forward along routes, record."""

    def __init__(self, broker: LoopbackBroker, routes: dict[tuple[str, str], tuple[str, str]]) -> None:
        self.routes = routes
        self.lock = threading.Lock()
        self.outputs: list[tuple[str, str, str]] = []
        self.acks: list[tuple[str, list[str]]] = []
        settings = LinkSettings("loopback", 0, "hub", "hub", None)
        self.link: LoopbackLink = broker.link(settings, self._event)
        self.link.start()
        self.link.subscribe([topics.all_outputs(DEVICE), topics.batch_outputs(DEVICE, "+"), topics.acks(DEVICE, "+")])

    def _event(self, event: Event) -> None:
        if not isinstance(event, Incoming):
            return
        match topics.parse(event.topic):
            case topics.ModuleOutput(_, module, output):
                self._output(module, output, list(event.user_properties), event.payload)
            case topics.BatchOutputs(_, module):
                for item in batches.decode(event.payload):
                    self._output(module, item.name, list(item.user_properties), item.body)
            case topics.ModuleTopic(_, module, topics.ModuleChannel.ACKS):
                with self.lock:
                    self.acks.append((module, [key.split("/", 1)[1] for key in json.loads(event.payload)]))

    def _output(self, module: str, output: str, pairs: list[tuple[str, str]], body: bytes) -> None:
        mid = dict(pairs)["$.mid"]
        with self.lock:
            self.outputs.append((module, output, mid))
        target = self.routes.get((module, output))
        if target is not None:
            props = [*pairs, ("$.cdid", DEVICE), ("$.cmid", module)]
            self.link.publish(topics.input_topic(DEVICE, *target), body, user_properties=props)
        self.link.publish(topics.receipts(DEVICE, module), json.dumps([mid]).encode())


@pytest.fixture
def broker() -> LoopbackBroker:
    return LoopbackBroker()


@pytest.fixture
def clients(broker: LoopbackBroker) -> Iterator[Callable[..., ModuleClient]]:
    made: list[ModuleClient] = []

    def make(module: str, **kw: Any) -> ModuleClient:
        client = ModuleClient(device_id=DEVICE, module_id=module, password="pw", link_factory=broker.link, **kw)
        made.append(client)
        client.connect(timeout=5)
        return client

    yield make
    for client in made:
        client.close()


def test_filter_matching() -> None:
    assert matches("a/+/c", "a/b/c")
    assert matches("a/#", "a")
    assert matches("a/#", "a/b/c")
    assert not matches("a/+", "a/b/c")
    assert not matches("a/b", "a/b/c")


def test_send_is_receipted_and_delivered_then_acked(broker: LoopbackBroker, clients) -> None:
    hub = FakeHub(broker, {("alpha", "out1"): ("beta", "in1")})
    got: list[InputMessage] = []
    beta = clients("beta")
    beta.on_input("in1", got.append)
    alpha = clients("alpha")
    assert broker.retained(topics.status(DEVICE, "alpha")) == b"online"
    ids = [alpha.send("out1", {"t": n}, {"unit": "C"}) for n in range(3)]
    alpha.flush(timeout=5)
    assert alpha.pending == 0
    wait_for(lambda: [m.id for m in got] == ids)
    assert got[0].json() == {"t": 0}
    assert got[0].properties == {"unit": "C"}
    assert got[0].system["connectionModuleId"] == "alpha"
    wait_for(lambda: sorted(i for m, a in hub.acks if m == "beta" for i in a) == sorted(ids))


def test_close_says_offline_and_a_dropped_link_leaves_its_will(broker: LoopbackBroker, clients) -> None:
    alpha = clients("alpha")
    alpha.close()
    assert broker.retained(topics.status(DEVICE, "alpha")) == b"offline"
    links: list[LoopbackLink] = []

    def factory(settings: LinkSettings, on_event: Callable[[Event], None]) -> LoopbackLink:
        links.append(broker.link(settings, on_event))
        return links[-1]

    beta = ModuleClient(device_id=DEVICE, module_id="beta", password="pw", link_factory=factory)
    beta.connect(timeout=5)
    assert broker.retained(topics.status(DEVICE, "beta")) == b"online"
    links[0].drop()
    assert broker.retained(topics.status(DEVICE, "beta")) == b"offline"
    beta.close()


def test_desired_properties_and_methods(broker: LoopbackBroker, clients) -> None:
    hub = FakeHub(broker, {})
    doc = {"$version": 3, "threshold": 5}
    hub.link.publish(topics.desired(DEVICE, "beta"), json.dumps(doc).encode(), retain=True)
    beta = clients("beta")
    assert beta.twin(timeout=5) == doc
    beta.on_method("reset", lambda payload: (200, {"echo": payload}))
    caller = clients("caller", username="$hub")
    assert caller.invoke_method("beta", "reset", {"n": 1}, timeout=5) == (200, {"echo": {"n": 1}})
    status, payload = caller.invoke_method("beta", "nope", timeout=5)
    assert status == 501
    assert "not registered" in payload["message"]
