"""KafkaSink's per-record caches: what reaches the producer is exactly what the pure conversion
functions of ``outpost.hub.upstream`` say, however the caches are hit; and the cached partitioner
picks kafka-python's default partitions. A fake producer stands in for kafka-python's."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kafka.partitioner import DefaultPartitioner

from outpost.hub import upstream
from outpost.hub.adapters import kafka_sink
from outpost.hub.adapters.kafka_sink import KafkaSink, KeyHashPartitioner
from outpost.hub.sinks import FailureKind
from outpost.hub.store import UPSTREAM, Stored
from outpost.wire.message import Message


class _Done:
    is_done = True
    exception = None

    @staticmethod
    def failed() -> bool:
        return False


class FakeProducer:
    """Records every send; every record is delivered."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        FakeProducer.instances.append(self)

    def send(self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> _Done:
        self.sent.append((topic, value, key, headers))
        return _Done()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    FakeProducer.instances = []
    monkeypatch.setattr(kafka_sink, "KafkaProducer", FakeProducer)
    monkeypatch.setattr(KafkaSink, "_probe", lambda _self: True)  # no broker: the fake stands in for it
    return FakeProducer.instances


def _message(i: int, **kwargs: Any) -> Message:
    fields: dict[str, Any] = {
        "id": f"id-{i}",
        "body": f'{{"n":{i}}}'.encode(),
        "source_device": "dev1",
        "source_module": "sensor",
        "output": "temperature",
        "properties": {"site": "plant-a"},
        "system": {"contentType": "application/json", "contentEncoding": "utf-8"},
    }
    fields.update(kwargs)
    return Message(**fields)


def _batch(messages: list[Message], first_seq: int = 1) -> list[Stored]:
    return [Stored(first_seq + n, UPSTREAM, 0, 0.0, 1e12, m) for n, m in enumerate(messages)]


def _expected(message: Message, topic_by_output: dict[str, str]) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
    topic = upstream.kafka_topic_for(message, topic="telemetry", topic_by_output=topic_by_output)
    return topic, message.body, upstream.kafka_key(message), upstream.kafka_headers(message)


def _mixed(count: int, rng: random.Random) -> list[Message]:
    """Messages of several sources, outputs and property sets, in a random order."""
    shapes: list[dict[str, Any]] = [
        {},
        {"output": "alerts"},
        {"source_module": None, "output": None},  # a leaf device's telemetry
        {"source_device": "dev2", "properties": {}},
        {"properties": {"site": "plant-b", "line": "7"}},
        {"system": {"contentType": "text/plain", "messageId": "ignored", "correlationId": "c1"}},
        {"properties": {"$.mid": "an application property that looks like a system key"}},
    ]
    return [_message(i, **rng.choice(shapes)) for i in range(count)]


def test_records_are_what_the_conversion_functions_say_across_cache_hits(producers: list[FakeProducer]) -> None:
    topic_by_output = {"alerts": "alerts-topic"}
    sink = KafkaSink("127.0.0.1:1", topic="telemetry", topic_by_output=topic_by_output)
    rng = random.Random(7)
    first, second = _mixed(300, rng), _mixed(300, rng)
    for index, messages in enumerate((first, second)):  # the second batch hits every cache
        result = sink.send(_batch(messages, first_seq=1 + 1000 * index))
        assert result.failure is FailureKind.NONE
        assert len(result.succeeded) == len(messages)
    (producer,) = producers
    assert producer.sent == [_expected(m, topic_by_output) for m in first + second]


def test_headers_handed_out_are_not_shared_with_the_cache(producers: list[FakeProducer]) -> None:
    sink = KafkaSink("127.0.0.1:1", topic="telemetry")
    sink.send(_batch([_message(1)]))
    producers[0].sent[0][3].append(("mutated", b"by the producer"))
    sink.send(_batch([_message(2)], first_seq=2))
    assert producers[0].sent[1][3] == upstream.kafka_headers(_message(2))


def test_an_illegal_topic_stays_invalid_when_its_route_is_cached(producers: list[FakeProducer]) -> None:
    sink = KafkaSink("127.0.0.1:1", topic="telemetry", topic_by_output={"alerts": "bad topic!"})
    for seq in (1, 3):
        result = sink.send(_batch([_message(seq, output="alerts"), _message(seq + 1)], first_seq=seq))
        assert [seq for seq, _ in result.invalid] == [seq]
        assert result.succeeded == [seq + 1]
    assert [topic for topic, *_ in producers[0].sent] == ["telemetry", "telemetry"]


def test_the_sink_uses_the_cached_partitioner_unless_configured_otherwise(producers: list[FakeProducer]) -> None:
    KafkaSink("127.0.0.1:1").send(_batch([_message(1)]))
    assert isinstance(producers[0].config["partitioner"], KeyHashPartitioner)
    mine = DefaultPartitioner()
    KafkaSink("127.0.0.1:1", producer_config={"partitioner": mine}).send(_batch([_message(1)]))
    assert producers[1].config["partitioner"] is mine


class Cluster:
    """The part of kafka-python's ``ClusterMetadata`` a partitioner reads: one topic."""

    def __init__(self, partitions: list[int], available: list[int]) -> None:
        self._partitions, self._available = set(partitions), set(available)

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._partitions) if topic == "t" else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._available) if topic == "t" else None


def test_key_hash_partitioner_picks_the_default_partitioners_partition() -> None:
    rng = random.Random(11)
    cached, default = KeyHashPartitioner(max_keys=16), DefaultPartitioner()
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(200)] + [b"dev1/sensor", "gerät/模块".encode()]
    for _ in range(3):  # first computed, then cached (and the small cache is cleared on the way)
        for key in keys:
            cluster = Cluster(rng.sample(range(64), rng.randint(1, 12)), [])
            expected = default.partition("t", key, key, b"v", b"v", cluster)
            assert cached.partition("t", key, key, b"v", b"v", cluster) == expected


def test_key_hash_partitioner_without_a_key_picks_an_available_partition() -> None:
    partitioner = KeyHashPartitioner()
    up = Cluster([0, 1, 2, 3], [1, 3])
    assert {partitioner.partition("t", None, None, b"v", b"v", up) for _ in range(50)} <= {1, 3}
    none_up = Cluster([0, 1], [])
    assert {partitioner.partition("t", None, None, b"v", b"v", none_up) for _ in range(50)} <= {0, 1}


def test_key_hash_partitioner_refuses_an_unknown_topic() -> None:
    with pytest.raises(ValueError, match="not found"):
        KeyHashPartitioner().partition("other", b"k", b"k", b"v", b"v", Cluster([0], [0]))
