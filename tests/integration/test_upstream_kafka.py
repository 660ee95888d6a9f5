"""KafkaSink against a real Kafka broker (KRaft, 127.0.0.1; see conftest_kafka.py).

What the far end sees is read back with a KafkaConsumer assigned to the topic's partitions from
the beginning (no consumer group), so every check counts records, not a group's progress.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from integration.conftest_kafka import KAFKA_GOES_DOWN
from outpost.hub.adapters.kafka_sink import KafkaSink
from outpost.hub.sinks import FailureKind
from outpost.hub.store import UPSTREAM, Stored
from outpost.wire.message import Message

if TYPE_CHECKING:
    from integration.conftest_kafka import KafkaBroker

pytest_plugins = ["integration.conftest_kafka"]

DEVICE = "dev1"


def _topic(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _stored(seq: int, *, body: bytes | None = None, output: str | None = "out", **props: str) -> Stored:
    message = Message(
        id=f"m{seq:06d}",
        body=body if body is not None else f"body-{seq}".encode(),
        source_device=DEVICE,
        source_module="sensor",
        output=output,
        properties=props,
        system={"contentType": "application/json", "correlationId": f"c{seq}"},
    )
    return Stored(seq=seq, endpoint=UPSTREAM, priority=0, enqueued_at=0.0, expires_at=1e12, message=message)


def _batch(start: int, count: int, **kwargs: Any) -> list[Stored]:
    return [_stored(seq, **kwargs) for seq in range(start, start + count)]


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Every record of the topic (from the beginning) once ``expected`` arrived, else what there is."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        assert partitions, f"topic {topic} does not exist"
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        # Nothing more than expected either: one more short poll.
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture
def sink_factory(kafka: str) -> Iterator[Any]:
    sinks: list[KafkaSink] = []

    def make(**kwargs: Any) -> KafkaSink:
        kwargs.setdefault("timeout", 10.0)
        sink = KafkaSink(kafka, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def test_batch_is_delivered_in_order_with_key_and_headers(kafka: str, sink_factory: Any) -> None:
    topic = _topic("upstream")
    sink = sink_factory(topic=topic)
    batch = _batch(1, 200, site="plant-a", line="7")

    result = sink.send(batch)

    assert result.succeeded == [item.seq for item in batch], result
    assert (result.retryable, result.invalid, result.failure) == ([], [], FailureKind.NONE)
    assert sink.connected()
    records = _read_all(kafka, topic, len(batch))
    headers = [dict(r.headers) for r in records]
    assert [h["$.mid"].decode() for h in headers] == [item.message.id for item in batch]  # in order, once each
    assert [r.value for r in records] == [item.message.body for item in batch]
    first = headers[0]
    assert first["site"] == b"plant-a"
    assert first["line"] == b"7"
    assert first["$.cdid"] == DEVICE.encode()
    assert first["$.cmid"] == b"sensor"
    assert first["$.on"] == b"out"
    assert first["$.ct"] == b"application/json"
    assert first["$.cid"] == b"c1"
    assert {r.key for r in records} == {f"{DEVICE}/sensor".encode()}


def test_topic_by_output_and_default_topic(kafka: str, sink_factory: Any) -> None:
    alerts, default = _topic("alerts"), _topic("telemetry")
    sink = sink_factory(topic=default, topic_by_output={"alerts": alerts})
    batch = [*_batch(1, 3, output="alerts"), *_batch(4, 2, output="temperature"), *_batch(6, 1, output=None)]

    result = sink.send(batch)

    assert result.succeeded == [1, 2, 3, 4, 5, 6]
    assert [dict(r.headers)["$.mid"] for r in _read_all(kafka, alerts, 3)] == [b"m000001", b"m000002", b"m000003"]
    assert [dict(r.headers)["$.mid"] for r in _read_all(kafka, default, 3)] == [b"m000004", b"m000005", b"m000006"]


def test_illegal_topic_is_invalid_and_the_rest_is_delivered(kafka: str, sink_factory: Any) -> None:
    good = _topic("good")
    sink = sink_factory(topic=good, topic_by_output={"bad": "no spaces allowed"})
    result = sink.send([_stored(1), _stored(2, output="bad"), _stored(3)])

    assert result.succeeded == [1, 3]
    assert [seq for seq, _ in result.invalid] == [2]
    assert "no spaces allowed" in result.invalid[0][1]
    assert result.failure is FailureKind.INVALID


def test_records_too_large_are_invalid(kafka: str, sink_factory: Any) -> None:
    # The broker's own limit: a topic whose max.message.bytes is 10 kB (the producer allows 1 MiB).
    small = _topic("small")
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics(
            [NewTopic(small, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": "10000"})]
        )
    finally:
        admin.close()
    sink = sink_factory(topic=small)
    batch = [_stored(1), _stored(2, body=b"x" * 20_000), _stored(3), _stored(4, body=b"y" * 2_000_000)]

    result = sink.send(batch)

    assert result.succeeded == [1, 3], result
    invalid = dict(result.invalid)
    assert sorted(invalid) == [2, 4]
    assert "MessageSizeTooLarge" in invalid[2]  # refused by the broker
    assert "MessageSizeTooLarge" in invalid[4]  # refused by the producer (max_request_size)
    assert result.retryable == []
    records = _read_all(kafka, small, 2)
    assert [dict(r.headers)["$.mid"] for r in records] == [b"m000001", b"m000003"]


@KAFKA_GOES_DOWN
def test_outage_is_retryable_and_recovery_drains(
    kafka: str, kafka_broker: KafkaBroker, sink_factory: Any, wait_until: Any
) -> None:
    topic = _topic("outage")
    timeout = 6.0
    sink = sink_factory(topic=topic, timeout=timeout)
    assert sink.send(_batch(1, 10)).succeeded == list(range(1, 11))

    with kafka_broker.outage():
        started = time.monotonic()
        result = sink.send(_batch(11, 50))
        elapsed = time.monotonic() - started
        print(f"send during the outage returned after {elapsed:.2f} s")
        assert result.failure is FailureKind.UNREACHABLE, result
        assert result.retryable == list(range(11, 61))
        assert (result.succeeded, result.invalid) == ([], [])
        assert elapsed < timeout + 2.0
        assert not sink.connected()
        # While it is down a send fails at once (no producer can bootstrap), still without raising.
        again = sink.send(_batch(11, 50))
        assert again.failure is FailureKind.UNREACHABLE
        assert again.retryable == list(range(11, 61))

    restarted = time.monotonic()
    wait_until(sink.connected, timeout=30.0, interval=0.1, what="KafkaSink.connected() after the restart")
    print(f"connected() turned True {time.monotonic() - restarted:.2f} s after kafka.sh start returned")
    result = wait_until(
        lambda: (r := sink.send(_batch(11, 50))).succeeded and r,
        timeout=30.0,
        interval=0.5,
        what="a successful send after the restart",
    )
    assert result.succeeded == list(range(11, 61)), result
    records = _read_all(kafka, topic, 60)
    ids = [dict(r.headers)["$.mid"].decode() for r in records]
    assert sorted(set(ids)) == [f"m{seq:06d}" for seq in range(1, 61)]
    # Records of the failed sends were never delivered behind the pump's back.
    assert len(ids) == 60


def test_backlog_drain_of_100k_messages(kafka: str, sink_factory: Any) -> None:
    topic = _topic("drain")
    sink = sink_factory(topic=topic, timeout=30.0)
    total, size = 100_000, 500
    body = b'{"temperature": 21.5, "humidity": 40.25, "pressure": 1013.2, "vibration": [0.1, 0.2, 0.3]}'
    body = body + b" " * (200 - len(body))
    batches = [_batch(start, size, body=body) for start in range(1, total + 1, size)]

    started = time.monotonic()
    delivered = 0
    for batch in batches:
        result = sink.send(batch)
        assert result.succeeded == [item.seq for item in batch], (result.failure, result.detail)
        delivered += len(result.succeeded)
    elapsed = time.monotonic() - started
    print(
        f"KafkaSink drained {delivered} x {len(body)} B in {total // size} batches in {elapsed:.2f} s "
        f"({delivered / elapsed:,.0f} msg/s)"
    )

    records = _read_all(kafka, topic, total, timeout=120.0)
    assert len(records) == total
    assert len({dict(r.headers)["$.mid"] for r in records}) == total
