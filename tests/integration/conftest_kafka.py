"""Pytest plugin: one real Apache Kafka broker (KRaft, 127.0.0.1) per test session.

Register with ``pytest_plugins = ["integration.conftest_kafka"]`` (tests/conftest.py, or the test
module). ``scripts/services/kafka.sh`` starts it (fetching the jars from Maven Central the first
time on a machine); a failure FAILS the tests that use it, with the script's output: never a skip.

Fixtures:
- ``kafka`` (session): the bootstrap address, ``127.0.0.1:PORT``.
- ``kafka_broker`` (session): the ``KafkaBroker`` behind it, to ``stop()`` and ``start()`` the
  broker inside a test (outage tests). The data dir and port are kept, so a restarted broker has
  every record and answers on the same address. A test that stops it must start it again
  (``with kafka_broker.outage(): ...`` does).
"""

from __future__ import annotations

import gc
import os
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services" / "kafka.sh"
#: Cold start fetches ~45 MB of jars through Maven; a warm start takes a few seconds.
START_TIMEOUT = 280.0


@dataclass
class KafkaBroker:
    """A broker run by kafka.sh in its own state dir (config, data/, kafka.log)."""

    state_dir: Path
    bootstrap: str = ""
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.state_dir / "kafka.log"

    def _run(self, action: str, timeout: float) -> str:
        env = dict(os.environ, OUTPOST_KAFKA_DIR=str(self.state_dir))
        # Free ports of its own (kept across restarts in its config), whatever a demo broker uses.
        env.pop("KAFKA_PORT", None)
        env.pop("KAFKA_CONTROLLER_PORT", None)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [str(SCRIPT), action],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"kafka.sh {action} did not finish within {timeout:g} s:\n{exc.stdout}{exc.stderr}", pytrace=False
            )
        self.timings.append((action, time.monotonic() - started))
        if proc.returncode != 0:
            pytest.fail(f"kafka.sh {action} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False)
        return proc.stdout.strip()

    def start(self, timeout: float = START_TIMEOUT) -> str:
        address = self._run("start", timeout).splitlines()[-1]
        if self.bootstrap and address != self.bootstrap:
            pytest.fail(f"Kafka came back on {address}, not {self.bootstrap}", pytrace=False)
        self.bootstrap = address
        return address

    def stop(self, timeout: float = 60.0) -> None:
        self._run("stop", timeout)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The broker is down inside the block and running again after it, whatever happens."""
        self.stop()
        try:
            yield
        finally:
            self.start()


_UNCLOSED_SOCKET = "unclosed <socket.socket"


def _kafka_goes_down(test: Any) -> Any:
    """For tests that take the broker down. kafka-python 3.0.12 does not close a socket whose connect
    was refused (``kafka.net.inet.KafkaNetSocket.sock_connect`` raises with it open); it is closed
    when garbage-collected, with a ResourceWarning. Ignored for these tests only; and collected at
    the very end of their teardown (when pytest has let go of the captured log records that still
    reach those sockets), so the warning never lands in a later test."""
    test = pytest.mark.kafka_goes_down(test)
    return pytest.mark.filterwarnings(f"ignore:{_UNCLOSED_SOCKET}:ResourceWarning")(test)


KAFKA_GOES_DOWN = _kafka_goes_down


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    if item.get_closest_marker("kafka_goes_down") is not None:
        deadline = time.monotonic() + 10  # the producers' I/O threads let go of theirs as they end
        while time.monotonic() < deadline and any(t.name.endswith("-network-thread") for t in threading.enumerate()):
            time.sleep(0.05)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _UNCLOSED_SOCKET, ResourceWarning)
            gc.collect()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()  # kafka.sh stops what it started when its own start fails
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka(kafka_broker: KafkaBroker) -> str:
    """The session broker's bootstrap address."""
    return kafka_broker.bootstrap


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float) -> list[Any]:
    """Every record of ``topic`` from the beginning (kafka-python ``ConsumerRecord``s), reading
    until ``expected`` records arrived or ``timeout`` passed; fails when the topic never appears."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            time.sleep(0.2)
        assert partitions, f"no topic {topic} in Kafka"
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
