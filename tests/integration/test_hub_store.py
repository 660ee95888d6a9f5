"""The hub's SQLite store and its pumps, on real SQLite files.

Store: drain order by priority, TTL and purging (also for endpoints nobody consumes), duplicate
ids, the disk cap under both policies, shrinking after a drain, crash safety (SIGKILL a writer
and find every acknowledged id), bounded memory with a large backlog.
Pumps: ack / dead-letter / retry, order under retryable failures, draining at once on wake().
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from outpost.errors import StoreError
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.metrics import HubMetrics
from outpost.hub.pump import Pump, Purger, Round
from outpost.hub.sinks import FailureKind, SinkResult
from outpost.hub.store import UPSTREAM, Delivery, FullPolicy, Stored, module_endpoint
from outpost.wire.message import Message

NOW = 1_700_000_000.0
LOW = 2_000_000_000
DAY = 86_400.0
FILTER = module_endpoint("filter", "in1")


def msg(mid: str, body: bytes = b'{"t": 21.5}', **kwargs: object) -> Message:
    return Message(id=mid, body=body, source_device="dev1", source_module="sensor", output="temp", **kwargs)  # type: ignore[arg-type]


def to(endpoint: str = UPSTREAM, priority: int = LOW, ttl: float = DAY) -> list[Delivery]:
    return [Delivery(endpoint, priority, NOW + ttl)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "hub.db") as opened:
        yield opened


def ids(batch: Sequence[Stored]) -> list[str]:
    return [stored.message.id for stored in batch]


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- order, TTL, duplicates ------------------------------------------------------------------------


def test_round_trip_keeps_the_message(store: SqliteStore) -> None:
    original = Message(
        id="m1",
        body=b"\x00\xffbinary",
        source_device="dev1",
        source_module="sensor",
        output="temp",
        properties={"severity": "high", "ünï": "cödé"},
        system={"contentType": "application/json", "correlationId": "c1"},
    )
    leaf = Message(id="m2", body=b"", source_device="leaf7")
    result = store.put_batch([(original, to(priority=3)), (leaf, to(FILTER))], NOW)
    assert result.stored == ["m1", "m2"]
    [stored] = store.next_batch(UPSTREAM, 10, NOW)
    assert stored.message == original
    assert (stored.endpoint, stored.priority, stored.enqueued_at, stored.expires_at) == (UPSTREAM, 3, NOW, NOW + DAY)
    assert store.next_batch(FILTER, 10, NOW)[0].message == leaf
    assert store.endpoints() == [FILTER, UPSTREAM]


def test_priorities_drain_first_then_order_of_arrival(store: SqliteStore) -> None:
    plan = [("a", LOW), ("b", 1), ("c", 0), ("d", LOW), ("e", 1), ("f", 0), ("g", 9)]
    store.put_batch([(msg(mid), to(priority=p)) for mid, p in plan[:4]], NOW)
    store.put_batch([(msg(mid), to(priority=p)) for mid, p in plan[4:]], NOW + 1)
    assert ids(store.next_batch(UPSTREAM, 100, NOW + 2)) == ["c", "f", "b", "e", "g", "a", "d"]
    first = store.next_batch(UPSTREAM, 3, NOW + 2)
    assert ids(first) == ["c", "f", "b"]
    store.ack(UPSTREAM, [s.seq for s in first[:2]])
    store.put_batch([(msg("h"), to(priority=0))], NOW + 3)  # a later priority-0 message overtakes the rest
    assert ids(store.next_batch(UPSTREAM, 100, NOW + 4)) == ["h", "b", "e", "g", "a", "d"]
    assert store.depth(UPSTREAM) == 6
    assert store.oldest_enqueued(UPSTREAM) == NOW


def test_each_endpoint_has_its_own_queue(store: SqliteStore) -> None:
    store.put_batch([(msg("m1"), [Delivery(UPSTREAM, 0, NOW + 60), Delivery(FILTER, 5, NOW + 10)])], NOW)
    [up] = store.next_batch(UPSTREAM, 10, NOW)
    store.ack(UPSTREAM, [up.seq])
    assert store.depth(UPSTREAM) == 0
    [filtered] = store.next_batch(FILTER, 10, NOW)  # the body is still there for the other endpoint
    assert filtered.message.body == b'{"t": 21.5}'
    store.ack(FILTER, [up.seq])  # another endpoint's seq: ignored
    assert store.depth(FILTER) == 1
    store.ack(FILTER, [filtered.seq])
    assert count_rows(store.path, "messages") == 0
    assert store.oldest_enqueued(FILTER) is None
    assert store.endpoints() == []


def test_expired_deliveries_are_skipped_and_purged_even_without_a_consumer(store: SqliteStore) -> None:
    gone = module_endpoint("removedModule", "in")  # no route, no pump: edgeHub never cleans these (#7509)
    store.put_batch(
        [
            (msg("short"), [Delivery(UPSTREAM, 0, NOW + 10), Delivery(gone, 0, NOW + 10)]),
            (msg("long"), [Delivery(UPSTREAM, LOW, NOW + 100)]),
            (msg("orphan"), [Delivery(gone, LOW, NOW + 20)]),
        ],
        NOW,
    )
    assert ids(store.next_batch(UPSTREAM, 10, NOW + 11)) == ["long"]
    assert store.depth(gone) == 2
    assert store.purge_expired(NOW + 11) == 2
    assert store.purge_expired(NOW + 21) == 1
    assert store.depth(gone) == 0
    assert store.endpoints() == [UPSTREAM]
    assert count_rows(store.path, "messages") == 1  # bodies nobody needs went with them
    assert store.purge_expired(NOW + 101) == 1
    assert count_rows(store.path, "messages") == 0


def test_duplicate_ids_are_stored_once(store: SqliteStore) -> None:
    first = store.put_batch([(msg("a"), to()), (msg("b"), to()), (msg("a"), to())], NOW)
    assert (first.stored, first.duplicates) == (["a", "b"], ["a"])
    again = store.put_batch([(msg("b"), to()), (msg("c"), to())], NOW + 1)
    assert (again.stored, again.duplicates) == (["c"], ["b"])
    batch = store.next_batch(UPSTREAM, 10, NOW + 2)
    store.ack(UPSTREAM, [s.seq for s in batch])
    after_ack = store.put_batch([(msg("a"), to())], NOW + 3)  # delivered already: still a duplicate
    assert after_ack.duplicates == ["a"]
    assert store.depth(UPSTREAM) == 0


def test_ids_are_forgotten_after_the_longest_ttl(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "hub.db", dedupe_window_secs=3600) as store:
        store.put_batch([(msg("short"), to(ttl=60)), (msg("long"), to(ttl=5 * DAY))], NOW)
        store.ack(UPSTREAM, [s.seq for s in store.next_batch(UPSTREAM, 10, NOW)])
        store.purge_expired(NOW + 61)
        assert store.put_batch([(msg("short"), to()), (msg("long"), to())], NOW + 61).stored == ["short"]
        store.purge_expired(NOW + 3601)
        assert store.put_batch([(msg("long"), to())], NOW + 3601).stored == ["long"]


def test_a_message_no_route_takes_is_acknowledged_but_not_stored(store: SqliteStore) -> None:
    assert store.put_batch([(msg("nowhere"), [])], NOW).stored == ["nowhere"]
    assert count_rows(store.path, "messages") == 0


def test_dead_letters_keep_reason_and_time(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "hub.db", clock=lambda: NOW + 5, dead_letter_retention_secs=100) as store:
        store.put_batch([(msg("bad", properties={"k": "v"}), to(priority=2)), (msg("ok"), to())], NOW)
        bad = store.next_batch(UPSTREAM, 1, NOW)
        store.dead_letter(UPSTREAM, [bad[0].seq], "payload too large")
        assert ids(store.next_batch(UPSTREAM, 10, NOW)) == ["ok"]
        [letter] = store.dead_letters()
        assert (letter.endpoint, letter.priority, letter.reason) == (UPSTREAM, 2, "payload too large")
        assert letter.dead_at == NOW + 5
        assert letter.message == msg("bad", properties={"k": "v"})
        store.purge_expired(NOW)  # retention is measured from dead_at with the store's clock: NOW + 5 - 100
        assert len(store.dead_letters()) == 1
    with SqliteStore(tmp_path / "hub.db", clock=lambda: NOW + 200, dead_letter_retention_secs=100) as store:
        store.purge_expired(NOW)
        assert store.dead_letters() == []


def test_only_store_errors_escape(tmp_path: Path) -> None:
    not_a_database = tmp_path / "junk.db"
    not_a_database.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError):
        SqliteStore(not_a_database)
    store = SqliteStore(tmp_path / "hub.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.put_batch([(msg("a"), to())], NOW)


# --- the disk cap ----------------------------------------------------------------------------------

CAP = 1_000_000
BODY = os.urandom(400)


def fill(store: SqliteStore, start: int, count: int, *, priority: int = LOW, batch: int = 100) -> tuple[list[str], int]:
    """Put ``count`` messages; returns the rejected ids and the drops."""
    rejected: list[str] = []
    dropped = 0
    for first in range(start, start + count, batch):
        items = [
            (msg(f"m{i:06d}", BODY), to(priority=priority)) for i in range(first, min(first + batch, start + count))
        ]
        result = store.put_batch(items, NOW)
        rejected += result.rejected
        dropped += result.dropped
        assert store.used_bytes() <= CAP * 1.02  # within a few pages
    return rejected, dropped


def file_size(path: Path) -> int:
    return path.stat().st_size


def test_reject_new_keeps_the_old_messages(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with SqliteStore(path, max_bytes=CAP, full_policy=FullPolicy.REJECT_NEW) as store:
        rejected, dropped = fill(store, 0, 4000)
        assert dropped == 0
        assert rejected, "1 MB cannot hold 4000 x 400 bytes"
        kept = ids(store.next_batch(UPSTREAM, 10_000, NOW))
        assert kept == [f"m{i:06d}" for i in range(len(kept))]  # a prefix: the oldest, in order
        assert set(kept).isdisjoint(rejected)
        assert len(kept) + len(rejected) == 4000
        assert store.used_bytes() > CAP * 0.9  # the cap is used, not wasted
        # a rejected message is not remembered: once there is room it is accepted
        store.ack(UPSTREAM, [s.seq for s in store.next_batch(UPSTREAM, 500, NOW)])
        retry = store.put_batch([(msg(rejected[0], BODY), to())], NOW)
        assert retry.stored == [rejected[0]]
        store.purge_expired(NOW)
    assert file_size(path) <= CAP * 1.05


def test_drop_oldest_keeps_the_newest_and_counts_drops(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with SqliteStore(path, max_bytes=CAP, full_policy=FullPolicy.DROP_OLDEST) as store:
        store.put_batch([(msg(f"alert{i}", BODY), to(priority=0)) for i in range(20)], NOW)
        rejected, dropped = fill(store, 0, 5000)
        assert rejected == []
        queued = ids(store.next_batch(UPSTREAM, 10_000, NOW))
        alerts, rest = queued[:20], queued[20:]
        assert alerts == [f"alert{i}" for i in range(20)]  # priority 0 outlives lower priorities
        assert rest == [f"m{i:06d}" for i in range(5000 - len(rest), 5000)]  # the newest, contiguous
        assert dropped == 5000 - len(rest)
        assert store.used_bytes() > CAP * 0.8
        # priority 5 pushes out the lowest priority first, then older priority-5 messages, never alerts
        mid = store.put_batch([(msg(f"p5-{i}", BODY), to(priority=5)) for i in range(3000)], NOW)
        assert mid.rejected == []
        queued = ids(store.next_batch(UPSTREAM, 10_000, NOW))
        assert queued[:20] == alerts
        assert queued[20:] == [f"p5-{i}" for i in range(3000 - len(queued) + 20, 3000)]
        # lowest-priority traffic cannot push out more important messages, only older lowest-priority ones
        low = store.put_batch([(msg(f"late{i}", BODY), to()) for i in range(500)], NOW)
        after = ids(store.next_batch(UPSTREAM, 10_000, NOW))
        assert after[: len(queued)] == queued
        assert after[len(queued) :] == low.stored[low.dropped :]
        assert low.rejected == [f"late{i}" for i in range(len(low.stored), 500)]
        store.purge_expired(NOW)
    assert file_size(path) <= CAP * 1.05


def test_the_file_shrinks_after_a_drain(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    with SqliteStore(path) as store:
        for start in range(0, 12_000, 1000):
            store.put_batch([(msg(f"m{i}", BODY), to()) for i in range(start, start + 1000)], NOW)
        store.reclaim()  # checkpoint so the main file holds everything
        full = file_size(path)
        assert full > 5_000_000
        while batch := store.next_batch(UPSTREAM, 500, NOW):
            store.ack(UPSTREAM, [s.seq for s in batch])
        store.purge_expired(NOW)
        assert store.size_bytes() < full / 10
        assert file_size(path) < full / 10
        assert file_size(path.with_name("hub.db-wal")) < 5_000_000


# --- crash safety ---------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from outpost.hub.adapters.sqlite_store import SqliteStore
    from outpost.hub.store import Delivery
    from outpost.wire.message import Message

    path, run = sys.argv[1], sys.argv[2]
    store = SqliteStore(path)
    n = 0
    while True:
        size = (1, 7, 50, 200)[n % 4]
        ids = [f"{run}-{n}-{i}" for i in range(size)]
        deliveries = [Delivery("upstream", n % 3, 4e9)]
        items = [(Message(mid, b"x" * 200, "dev1", "sensor", "temp"), deliveries) for mid in ids]
        result = store.put_batch(items, 1.0)
        assert result.stored == ids
        sys.stdout.write(" ".join(ids) + "\\n")
        sys.stdout.flush()
        n += 1
    """
)


def test_no_acknowledged_message_is_lost_when_the_writer_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(7)
    acknowledged: list[str] = []
    for run in range(5):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), f"r{run}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # wait until it is writing (imports take a moment)
        assert first.endswith(b"\n"), child.stderr.read() if child.stderr else b""
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
        lines = (first + rest).split(b"\n")
        complete = lines[:-1]  # the text after the last newline may be a torn write: not acknowledged
        acknowledged += [mid for line in complete for mid in line.decode().split()]
        assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) > 1000
    with SqliteStore(path) as store:
        present = {s.message.id for s in store.next_batch(UPSTREAM, len(acknowledged) + 1000, 2.0)}
    missing = [mid for mid in acknowledged if mid not in present]
    assert missing == []


# --- memory -----------------------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_large_backlog_is_never_loaded_into_memory(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    body = b"y" * 100
    with SqliteStore(path) as store:
        for start in range(0, 200_000, 5000):
            store.put_batch(
                [(msg(f"m{i}", body), [Delivery(UPSTREAM, i % 3, NOW + DAY)]) for i in range(start, start + 5000)], NOW
            )
    with SqliteStore(path) as store:
        before = rss_bytes()
        assert store.depth(UPSTREAM) == 200_000
        assert store.oldest_enqueued(UPSTREAM) == NOW
        assert store.endpoints() == [UPSTREAM]
        for _ in range(20):
            batch = store.next_batch(UPSTREAM, 500, NOW)
            assert len(batch) == 500
            store.ack(UPSTREAM, [s.seq for s in batch])
        assert store.purge_expired(NOW) == 0
        growth = rss_bytes() - before
    assert growth < 24 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"


# --- pumps ------------------------------------------------------------------------------------------


class ScriptedSink:
    """A sink that sends in order and stops at the first failure, as real sinks must.

    ``down``: everything is retryable (UNREACHABLE). ``invalid``: ids refused forever.
    ``flaky``: ids that fail (retryable) the given number of times first.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.down = False
        self.invalid: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.delivered: list[Stored] = []
        self.attempts = 0
        self.first_success_at: float | None = None
        self.lock = threading.Lock()

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        with self.lock:
            self.attempts += 1
            seqs = [s.seq for s in batch]
            if self.down:
                return SinkResult(retryable=seqs, failure=FailureKind.UNREACHABLE, detail="link down")
            result = SinkResult()
            for index, stored in enumerate(batch):
                mid = stored.message.id
                if mid in self.invalid:
                    result.invalid.append((stored.seq, "refused"))
                elif self.flaky.get(mid, 0) > 0:
                    self.flaky[mid] -= 1
                    result.retryable = seqs[index:]
                    result.failure = FailureKind.THROTTLED
                    return result
                else:
                    if self.first_success_at is None:
                        self.first_success_at = time.monotonic()
                    self.delivered.append(stored)
                    result.succeeded.append(stored.seq)
            return result

    def connected(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass


class Running:
    """A pump on a thread, stopped and joined on exit."""

    def __init__(self, pump: Pump) -> None:
        self.pump = pump
        self.stop = threading.Event()
        self.thread = threading.Thread(target=pump.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.pump.wake()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_pump_acks_dead_letters_and_retries(store: SqliteStore) -> None:
    sink = ScriptedSink()
    sink.invalid = {"bad"}
    sink.flaky = {"slow": 1}
    metrics = HubMetrics()
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, metrics=metrics)
    store.put_batch([(msg(mid), to()) for mid in ("a", "bad", "slow", "b")], NOW)
    assert pump.round() is Round.RETRY
    assert [s.message.id for s in sink.delivered] == ["a"]
    assert ids(store.next_batch(UPSTREAM, 10, NOW)) == ["slow", "b"]
    assert [letter.message.id for letter in store.dead_letters()] == ["bad"]
    assert pump.backoff_secs == pytest.approx(0.1)
    assert pump.round() is Round.PROGRESS
    assert pump.round() is Round.EMPTY
    assert [s.message.id for s in sink.delivered] == ["a", "slow", "b"]
    assert pump.backoff_secs == 0
    assert metrics.registry.get_sample_value("outpost_hub_messages_out_total", {"endpoint": UPSTREAM}) == 3
    assert metrics.registry.get_sample_value("outpost_hub_dropped_total", {"reason": "invalid"}) == 1


def test_backoff_doubles_to_the_cap(store: SqliteStore) -> None:
    sink = ScriptedSink()
    sink.down = True
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, max_backoff_secs=1.0)
    store.put_batch([(msg("a"), to())], NOW)
    backoffs = []
    for _ in range(6):
        assert pump.round() is Round.RETRY
        backoffs.append(pump.backoff_secs)
    assert backoffs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize("ack_behind", [False, True])
def test_order_within_a_priority_survives_retryable_failures(store: SqliteStore, ack_behind: bool) -> None:
    sink = ScriptedSink()
    rng = random.Random(3)
    plan = [(f"m{i:03d}", rng.choice([0, 1, LOW])) for i in range(300)]
    sink.flaky = {mid: rng.randint(1, 2) for mid, _ in rng.sample(plan, 25)}
    store.put_batch([(msg(mid), to(priority=p)) for mid, p in plan], NOW)
    pump = Pump(
        store, UPSTREAM, sink, clock=lambda: NOW, batch_size=40, min_backoff_secs=0.001, max_backoff_secs=0.002,
        ack_behind=ack_behind,
    )  # fmt: skip
    with Running(pump):
        wait_for(lambda: store.depth(UPSTREAM) == 0)
    delivered = [s.message.id for s in sink.delivered]
    assert sorted(delivered) == sorted(mid for mid, _ in plan)  # each exactly once
    for priority in (0, 1, LOW):
        expected = [mid for mid, p in plan if p == priority]
        assert [s.message.id for s in sink.delivered if s.priority == priority] == expected


@pytest.mark.parametrize("ack_behind", [False, True])
def test_wake_after_an_outage_drains_at_once_not_after_the_backoff(store: SqliteStore, ack_behind: bool) -> None:
    sink = ScriptedSink()
    sink.down = True
    store.put_batch([(msg(f"m{i}"), to()) for i in range(1000)], NOW)
    # poll_secs is long so that only wake() can end the backoff early
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, max_backoff_secs=10.0, poll_secs=30.0, ack_behind=ack_behind)
    with Running(pump):
        wait_for(lambda: pump.backoff_secs >= 0.8)  # 0.1 + 0.2 + 0.4 + 0.8: the next wait is >= 1.6 s
        attempts = sink.attempts
        for _ in range(50):  # new messages arrive while the link is down: they must not cause retries
            pump.wake()
            time.sleep(0.002)
        assert sink.attempts == attempts
        sink.down = False
        woken = time.monotonic()
        pump.wake()  # what the hub does when the sink reports it reconnected
        wait_for(lambda: sink.first_success_at is not None, timeout=2.0)
        assert sink.first_success_at is not None
        assert sink.first_success_at - woken < 0.1
        wait_for(lambda: store.depth(UPSTREAM) == 0)
    assert len(sink.delivered) == 1000


def test_a_pump_notices_a_reconnect_without_a_wake(store: SqliteStore) -> None:
    sink = ScriptedSink()
    sink.down = True
    store.put_batch([(msg("a"), to())], NOW)
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, min_backoff_secs=5.0, poll_secs=0.02)
    with Running(pump):
        wait_for(lambda: sink.attempts == 1)
        time.sleep(0.05)
        sink.down = False
        began = time.monotonic()
        wait_for(lambda: store.depth(UPSTREAM) == 0, timeout=2.0)
        assert time.monotonic() - began < 1.0


@pytest.mark.parametrize("ack_behind", [False, True])
def test_an_idle_pump_sleeps_until_woken_and_wakes_the_purger_after_a_drain(
    store: SqliteStore, ack_behind: bool
) -> None:
    sink = ScriptedSink()
    drained = threading.Event()
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, idle_secs=30.0, on_drained=drained.set, ack_behind=ack_behind)
    with Running(pump):
        wait_for(lambda: sink.attempts == 0 and pump.backoff_secs == 0)
        time.sleep(0.1)
        assert sink.attempts == 0  # nothing queued, nothing sent, no busy loop
        store.put_batch([(msg("a"), to())], NOW)
        began = time.monotonic()
        pump.wake()
        wait_for(lambda: store.depth(UPSTREAM) == 0, timeout=2.0)
        assert time.monotonic() - began < 0.1
        assert drained.wait(2.0)


class FailingAcks:
    """The real store, but ``ack`` fails the first ``failures`` times (a disk error, say)."""

    def __init__(self, store: SqliteStore, failures: int) -> None:
        self.store, self.failures, self.acks = store, failures, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def ack(self, endpoint: str, seqs: Sequence[int]) -> None:
        self.acks += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk I/O error (injected)")
        self.store.ack(endpoint, seqs)


def test_ack_behind_writes_a_rounds_acks_while_the_next_batch_is_sent(store: SqliteStore) -> None:
    sink = ScriptedSink()
    metrics = HubMetrics()
    store.put_batch([(msg(f"m{i:02d}"), to()) for i in range(30)], NOW)
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, batch_size=10, metrics=metrics, ack_behind=True)
    depths = []
    for _ in range(3):
        assert pump.round() is Round.PROGRESS
        depths.append(store.depth(UPSTREAM))
    assert depths == [30, 20, 10]  # each round's acks are written during the next round's send
    assert pump.round() is Round.PROGRESS  # only the unwritten batch was left: written now, look again
    assert store.depth(UPSTREAM) == 0
    assert pump.round() is Round.EMPTY
    assert [s.message.id for s in sink.delivered] == [f"m{i:02d}" for i in range(30)]  # each once, in order
    assert metrics.registry.get_sample_value("outpost_hub_messages_out_total", {"endpoint": UPSTREAM}) == 30


def test_ack_behind_settles_when_the_pump_stops(store: SqliteStore) -> None:
    sink = ScriptedSink()
    store.put_batch([(msg(f"m{i}"), to()) for i in range(5)], NOW)
    pump = Pump(store, UPSTREAM, sink, clock=lambda: NOW, ack_behind=True)
    assert pump.round() is Round.PROGRESS
    assert store.depth(UPSTREAM) == 5
    stop = threading.Event()
    stop.set()
    pump.run(stop)  # returns at once, but not before writing what the last round decided
    assert store.depth(UPSTREAM) == 0


def test_ack_behind_sends_again_what_a_failed_write_left_queued(store: SqliteStore) -> None:
    sink = ScriptedSink()
    store.put_batch([(msg(f"m{i:02d}"), to()) for i in range(20)], NOW)
    failing = FailingAcks(store, failures=1)
    pump = Pump(failing, UPSTREAM, sink, clock=lambda: NOW, batch_size=10, ack_behind=True)  # type: ignore[arg-type]
    assert pump.round() is Round.PROGRESS  # m00-m09 sent; their ack is written next round, and fails
    assert pump.round() is Round.RETRY  # m10-m19 sent and acked; the failed write means a backoff
    assert store.depth(UPSTREAM) == 10
    assert pump.round() is Round.PROGRESS  # m00-m09 again (at-least-once)
    assert pump.settle()
    assert store.depth(UPSTREAM) == 0
    delivered = [s.message.id for s in sink.delivered]
    assert delivered == [f"m{i:02d}" for i in range(20)] + [f"m{i:02d}" for i in range(10)]


def test_next_batch_skips_what_it_is_told_to(store: SqliteStore) -> None:
    store.put_batch([(msg(mid), to(priority=p)) for mid, p in (("a", 1), ("b", 1), ("c", 0), ("d", 1))], NOW)
    first = store.next_batch(UPSTREAM, 2, NOW)
    assert ids(first) == ["c", "a"]
    store.put_batch([(msg("e"), to(priority=0))], NOW)  # a newcomer of a higher priority is not skipped
    assert ids(store.next_batch(UPSTREAM, 10, NOW, skip=[s.seq for s in first])) == ["e", "b", "d"]


def test_purger_deletes_expired_deliveries_and_counts_them(store: SqliteStore) -> None:
    clock = [NOW]
    metrics = HubMetrics()
    purger = Purger(store, clock=lambda: clock[0], interval_secs=30.0, min_gap_secs=0.0, metrics=metrics)
    store.put_batch([(msg("a"), to(ttl=5)), (msg("b"), to(FILTER, ttl=5)), (msg("c"), to(ttl=50))], NOW)
    clock[0] = NOW + 6
    stop = threading.Event()
    thread = threading.Thread(target=purger.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: store.depth(FILTER) == 0)
    assert store.depth(UPSTREAM) == 1
    clock[0] = NOW + 51
    purger.wake()
    wait_for(lambda: store.depth(UPSTREAM) == 0)
    stop.set()
    purger.wake()
    thread.join(timeout=5)
    assert metrics.registry.get_sample_value("outpost_hub_dropped_total", {"reason": "expired"}) == 3
