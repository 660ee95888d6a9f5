"""Deferred upstream sync through the whole hub: Kafka down for a while with 100,000 messages
queued on disk, then back: the backlog drains in order while new messages keep flowing, and
every id arrives at the far end."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from integration.conftest_kafka import KAFKA_GOES_DOWN, read_topic
from integration.conftest_mosquitto import wait_for
from integration.hub_harness import ALPHA_TO_BETA, hub_manifest
from outpost.hub.store import UPSTREAM

if TYPE_CHECKING:
    from integration.conftest_kafka import KafkaBroker

BACKLOG = 100_000


def _ids_in_topic(bootstrap: str, topic: str, expected: int, timeout: float) -> list[str]:
    records = read_topic(bootstrap, topic, expected, timeout)
    return [dict(record.headers)["$.mid"].decode() for record in records]


@KAFKA_GOES_DOWN
def test_kafka_outage_with_100k_queued_then_drains_while_new_messages_flow(
    hub_factory: Any, module_factory: Any, kafka: str, kafka_broker: KafkaBroker
) -> None:
    topic = f"telemetry-{uuid.uuid4().hex[:8]}"
    routes = {**ALPHA_TO_BETA, "up": "FROM /messages/modules/alpha/outputs/* INTO $upstream"}
    hub_ext = {"upstream": {"sink": "kafka", "kafka": {"bootstrapServers": kafka, "topic": topic}}}
    hub = hub_factory(hub_manifest(routes, hub_ext=hub_ext))
    alpha = module_factory(hub, "alpha", max_outbox=BACKLOG + 10_000, send_timeout=60.0)
    alpha.connect()

    kafka_broker.stop()
    began = time.monotonic()
    sent = [alpha.send("out", b'{"t":21.5}', content_type="application/json") for _ in range(BACKLOG)]
    alpha.flush(timeout=600)  # every message receipted: on disk in the hub
    queued_secs = time.monotonic() - began
    assert hub.store is not None
    wait_for(lambda: hub.store.depth(UPSTREAM) >= BACKLOG, timeout=60, what="the backlog on disk")
    print(f"\n{BACKLOG} messages queued through the hub in {queued_secs:.1f} s while Kafka was down")

    kafka_broker.start()
    began = time.monotonic()
    more = [alpha.send("out", b'{"t":22.0}', content_type="application/json") for _ in range(2_000)]
    alpha.flush(timeout=120)
    wait_for(lambda: hub.store.depth(UPSTREAM) == 0, timeout=600, what="the upstream queue drained")
    drained_secs = time.monotonic() - began
    print(f"drained {BACKLOG + len(more)} messages to Kafka in {drained_secs:.1f} s")

    expected = sent + more
    ids = _ids_in_topic(kafka, topic, len(expected), timeout=180)
    assert set(ids) == set(expected)  # nothing acknowledged was lost
    duplicates = len(ids) - len(set(ids))
    print(f"duplicates at the far end: {duplicates}")
    first_seen = {}
    for position, message_id in enumerate(ids):
        first_seen.setdefault(message_id, position)
    order = [first_seen[m] for m in sent]
    assert order == sorted(order)  # the backlog arrived in the order it was sent
