"""Upstream drain benchmark: a backlog queued in the hub's store while Kafka was down, drained to Kafka.

Run: ``scripts/bench upstream`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_upstream.py
[--json] [--messages N] [--repeats N] [--pump-batch N] [--no-crc32c] [--bootstrap HOST:PORT] [--dir PATH]``).

In one run, all on 127.0.0.1:

1. starts a real Kafka broker with ``scripts/services/kafka.sh`` in a state dir of its own (as the
   integration tests do), unless ``--bootstrap`` names one that already runs; stops it at the end;
2. **fill**: a real ``SqliteStore`` gets ``--messages`` (default 1,000,000) messages queued for the
   ``upstream`` endpoint with ``put_batch`` in batches of 1,000 (as ingress stores them while the
   upstream is unreachable): ~80-byte JSON bodies and the properties an SDK module's message
   carries (one application property, content type and encoding, message id, source device,
   module and output: 7 Kafka headers per record). The filled store is copied once per repeat;
3. **outpost**: the hub's real ``Pump`` (on its own thread, as the hub runs it) and ``KafkaSink``
   drain the store until the queue is empty, to a fresh topic per repeat; msgs/s is measured
   from the pump's start (the producer's connect included) until it finds the queue empty;
4. **raw**: a bare kafka-python ``KafkaProducer`` with the sink's producer settings (acks=all,
   idempotent, the same batch/linger/in-flight settings; kafka-python's stock partitioner) sends
   the same records (topic, key, value, headers, built beforehand) and flushes once, to a fresh
   topic per repeat;
5. **far end**: every topic is read back: records (end offsets), message ids lost, duplicates and
   whether the ids arrived in the order they were queued.

Repeats alternate raw and outpost; the medians are reported. One repeat takes about 5 minutes on
a 2-core machine (the fill alone ~100 s, each far-end read ~25 s), hence ``--repeats 1`` by default;
the figures are noisy on a shared machine: use ``--repeats 3`` (~11 minutes) for the docs.
``--no-crc32c`` makes kafka-python use its pure-Python CRC-32C, as it does without ``crc32c``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if "--no-crc32c" in sys.argv:  # before kafka-python is imported: it picks its CRC-32C then
    sys.modules["crc32c"] = None  # type: ignore[assignment]

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record import util as kafka_record_util

from outpost.hub.adapters.kafka_sink import KafkaSink
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.pump import Pump
from outpost.hub.store import UPSTREAM, Delivery
from outpost.hub.upstream import kafka_headers, kafka_key
from outpost.wire.message import Message, new_id

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "scripts" / "services" / "kafka.sh"
FILL_BATCH = 1_000
DAY = 86_400.0
#: The pump batch the hub uses for its upstream endpoint (outpost.hub.service).
DEFAULT_PUMP_BATCH = 5000


@dataclass
class Drain:
    messages: int
    seconds: float
    topic: str


def body(i: int) -> bytes:
    """~80 bytes of telemetry JSON, a little different each time."""
    reading = {"machine": {"temperature": 60 + (i % 400) / 10, "pressure": 1.0 + (i % 97) / 1000}, "seq": i}
    return json.dumps(reading, separators=(",", ":")).encode().ljust(80)


def message(i: int) -> Message:
    """What an SDK module's ``send("telemetry", {...}, {"machine": ...})`` becomes in the hub."""
    return Message(
        id=new_id(),  # as the SDK makes it
        body=body(i),
        source_device="edge-gateway-01",
        source_module="sensor",
        output="telemetry",
        properties={"machine": f"press-{i % 8}"},
        system={"contentType": "application/json", "contentEncoding": "utf-8"},
    )


# --- the broker --------------------------------------------------------------------------------


@contextmanager
def kafka_broker(state_dir: Path) -> Iterator[str]:
    """A broker of our own (kafka.sh with its own OUTPOST_KAFKA_DIR), stopped afterwards."""
    env = dict(os.environ, OUTPOST_KAFKA_DIR=str(state_dir))
    env.pop("KAFKA_PORT", None)
    env.pop("KAFKA_CONTROLLER_PORT", None)

    def run(action: str) -> str:
        proc = subprocess.run(
            [str(KAFKA_SH), action], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"kafka.sh {action} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    try:
        yield run("start").splitlines()[-1]
    finally:
        run("stop")


# --- measurements --------------------------------------------------------------------------------


def fill(path: Path, messages: list[Message]) -> float:
    """Queue ``messages`` for upstream in batches; returns msgs/s of ``put_batch``."""
    now = time.time()
    deliveries = [Delivery(UPSTREAM, 0, now + 7 * DAY)]
    with SqliteStore(path) as store:
        began = time.perf_counter()
        for start in range(0, len(messages), FILL_BATCH):
            result = store.put_batch([(m, deliveries) for m in messages[start : start + FILL_BATCH]], now)
            if result.rejected or result.duplicates:
                raise SystemExit(f"fill: {len(result.rejected)} rejected, {len(result.duplicates)} duplicates")
        seconds = time.perf_counter() - began
        if store.depth(UPSTREAM) != len(messages):
            raise SystemExit(f"fill: {store.depth(UPSTREAM)} queued, expected {len(messages)}")
    return len(messages) / seconds


def drain_outpost(filled: Path, work: Path, bootstrap: str, pump_batch: int) -> Drain:
    """Copy the filled store, drain it with the hub's Pump + KafkaSink; wall time to empty."""
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(filled, work)
    topic = f"outpost-{uuid.uuid4().hex[:8]}"
    drained = threading.Event()
    stop = threading.Event()
    with SqliteStore(work) as store:
        queued = store.depth(UPSTREAM)
        sink = KafkaSink(bootstrap, topic=topic)
        pump = Pump(store, UPSTREAM, sink, batch_size=pump_batch, on_drained=drained.set, ack_behind=True)
        thread = threading.Thread(target=pump.run, args=(stop,), name="bench-pump")
        began = time.perf_counter()
        thread.start()
        try:
            if not drained.wait(timeout=1800):
                raise SystemExit(f"the pump did not drain within 30 min ({store.depth(UPSTREAM)} left)")
            seconds = time.perf_counter() - began
        finally:
            stop.set()
            pump.wake()
            thread.join()
            sink.close()
        left, dead = store.depth(UPSTREAM), len(store.dead_letters(10))
        if left or dead:
            raise SystemExit(f"after the drain: {left} still queued, {dead} dead letters")
    return Drain(queued, seconds, topic)


def raw_records(messages: list[Message]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) per message: what the sink sends, computed before the clock starts."""
    return [(kafka_key(m), m.body, kafka_headers(m)) for m in messages]


def drain_raw(records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]], config: dict[str, Any]) -> Drain:
    """Bare KafkaProducer: send every record, one flush at the end."""
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    config = {**config, "max_block_ms": 60_000}  # the first send waits for the topic's metadata
    began = time.perf_counter()
    producer = KafkaProducer(**config)
    try:
        send = producer.send
        futures = [send(topic, value=value, key=key, headers=headers) for key, value, headers in records]
        producer.flush(timeout=600)
        seconds = time.perf_counter() - began
        failed = sum(1 for f in futures if not f.is_done or f.failed())
        if failed:
            raise SystemExit(f"raw producer: {failed} records not delivered")
    finally:
        producer.close(timeout=10)
    return Drain(len(records), seconds, topic)


def far_end(bootstrap: str, topic: str, expected: list[str]) -> dict[str, Any]:
    """Read the topic back: records, lost ids, duplicates, and whether the ids came in queue order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            raise SystemExit(f"no topic {topic} in Kafka")
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        records = sum(ends[p] - starts[p] for p in partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ids: list[str] = []
        deadline = time.monotonic() + 600
        while len(ids) < records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                for record in batch:
                    ids.extend(value.decode() for key, value in record.headers if key == "$.mid")
    finally:
        consumer.close()
    unique = set(ids)
    first: dict[str, int] = {}
    for position, mid in enumerate(ids):
        first.setdefault(mid, position)
    positions = [first[m] for m in expected if m in first]
    return {
        "records": records,
        "lost": len(set(expected) - unique),
        "duplicates": len(ids) - len(unique),
        "unexpected": len(unique - set(expected)),
        "in_order": len(partitions) == 1 and positions == sorted(positions),
    }


def producer_config(bootstrap: str) -> dict[str, Any]:
    """The sink's own producer settings (its defaults) for the raw baseline, but kafka-python's
    stock partitioner: the baseline is bare kafka-python (the sink caches the partitioner's hashes)."""
    config: dict[str, Any] = dict(KafkaSink(bootstrap)._config)
    config.pop("partitioner", None)
    config["client_id"] = "bench-raw"
    return config


def measure_all(root: Path, bootstrap: str, count: int, repeats: int, pump_batch: int) -> dict[str, Any]:
    messages = [message(i) for i in range(count)]
    expected = [m.id for m in messages]
    filled = root / "filled.db"
    fill_rate = fill(filled, messages)
    records = raw_records(messages)
    del messages
    config = producer_config(bootstrap)
    raw_runs: list[Drain] = []
    ours_runs: list[Drain] = []
    checks: list[dict[str, Any]] = []
    for _ in range(repeats):
        raw_runs.append(drain_raw(records, config))
        ours_runs.append(drain_outpost(filled, root / "drain.db", bootstrap, pump_batch))
        checks.append(far_end(bootstrap, raw_runs[-1].topic, expected))
        checks.append(far_end(bootstrap, ours_runs[-1].topic, expected))
    raw_rates = [r.messages / r.seconds for r in raw_runs]
    ours_rates = [r.messages / r.seconds for r in ours_runs]
    return {
        "messages": count,
        "repeats": repeats,
        "pump_batch": pump_batch,
        "fill_per_s": fill_rate,
        "raw_per_s": statistics.median(raw_rates),
        "outpost_per_s": statistics.median(ours_rates),
        "raw_runs_per_s": raw_rates,
        "outpost_runs_per_s": ours_rates,
        "raw_far_end": checks[0::2],
        "outpost_far_end": checks[1::2],
        "producer": {k: config[k] for k in ("acks", "enable_idempotence", "linger_ms", "batch_size")},
    }


def table(results: dict[str, Any]) -> str:
    def far(checks: list[dict[str, Any]]) -> str:
        worst = {k: max(c[k] for c in checks) for k in ("lost", "duplicates", "unexpected")}
        records = "/".join(f"{c['records']:,}" for c in checks)
        order = "in order" if all(c["in_order"] for c in checks) else "**out of order**"
        return f"{records}; lost {worst['lost']}, duplicates {worst['duplicates']}, {order}"

    raw, ours = results["raw_per_s"], results["outpost_per_s"]
    runs = ", ".join(f"{r:,.0f}" for r in results["outpost_runs_per_s"])
    raw_runs = ", ".join(f"{r:,.0f}" for r in results["raw_runs_per_s"])
    n = results["messages"]
    return "\n".join(
        [
            "| measurement | value |",
            "| --- | ---: |",
            f"| fill: `put_batch` of {FILL_BATCH:,}, {n:,} messages (msgs/s) | {results['fill_per_s']:,.0f} |",
            f"| raw: bare `KafkaProducer.send()` x {n:,} + one flush (msgs/s) | {raw:,.0f} |",
            f"| outpost: `Pump` (batch {results['pump_batch']:,}) + `KafkaSink` (msgs/s) | {ours:,.0f} |",
            f"| outpost / raw | {ours / raw:.2f} |",
            f"| runs: raw / outpost (msgs/s) | {raw_runs} / {runs} |",
            f"| far end, raw: records; lost, duplicates, order | {far(results['raw_far_end'])} |",
            f"| far end, outpost: records; lost, duplicates, order | {far(results['outpost_far_end'])} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: print a markdown table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--messages", type=int, default=1_000_000, help="backlog size (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=1, help="drains of each kind; the median is reported")
    parser.add_argument("--pump-batch", type=int, default=DEFAULT_PUMP_BATCH, help="the pump's batch size")
    parser.add_argument("--bootstrap", default=None, help="use this running broker instead of starting one")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store and broker (default: temp)")
    parser.add_argument(
        "--no-crc32c", action="store_true", help="make kafka-python use its pure-Python CRC-32C (as without crc32c)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-upstream-") as scratch:
        root = Path(scratch)
        if args.bootstrap:
            results = measure_all(root, args.bootstrap, args.messages, args.repeats, args.pump_batch)
        else:
            with kafka_broker(root / "kafka") as bootstrap:
                results = measure_all(root, bootstrap, args.messages, args.repeats, args.pump_batch)
    info = {"python": sys.version.split()[0], "kafka_python": kafka.__version__, "body_bytes": len(body(0))}
    info["crc32c"] = "pure Python" if kafka_record_util.crc32c_c is None else "C (crc32c)"
    if args.json:
        print(json.dumps({**info, **results}, indent=2))
    else:
        print(
            f"Python {info['python']}, kafka-python {info['kafka_python']} (CRC-32C: {info['crc32c']}), "
            f"{info['body_bytes']}-byte bodies, 7 headers, acks=all + idempotent, one partition\n"
        )
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
