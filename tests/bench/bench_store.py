"""Benchmark of the hub's SQLite store and route table, against raw sqlite3 doing the same writes.

Run: ``.venv/bin/python tests/bench/bench_store.py [--json] [--repeats N] [--dir PATH]``

Measures, with ``time.perf_counter`` and the median of several repeats:

* ``put_batch`` messages/s for batches of 1, 100 and 500 messages (200-byte bodies, one
  delivery each, every batch a durable transaction), against a baseline: plain sqlite3
  ``executemany`` of the same message and delivery rows into index-free tables, one transaction
  per batch, with the same pragmas (WAL, ``synchronous=FULL``);
* the drain rate (``next_batch(500)`` + ``ack``) against plain sqlite3 reading 500 rows in
  rowid order and deleting them;
* ``RouteTable.deliveries()`` per second with 10 routes (sources, conditions, priorities).

The batch-of-1 figures measure the disk's fsync rate more than anything else. Put the files on
the device's real storage with ``--dir`` for figures that mean something there.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.routing import RouteTable
from outpost.hub.store import UPSTREAM, Delivery
from outpost.manifest.models import EdgeHubDesired
from outpost.wire.message import Message

BODY = b'{"machine":{"temperature":72.5,"pressure":1.013},"ambient":{"temperature":21.2,"humidity":31}}'.ljust(200)
NOW = 1_700_000_000.0
BATCH_SIZES = (1, 100, 500)
ROUTES: dict[str, Any] = {
    "all": "FROM /messages/* INTO $upstream",
    "alerts": {
        "route": "FROM /messages/modules/sensor/outputs/alerts INTO $upstream",
        "priority": 0,
        "timeToLiveSecs": 86400,
    },
    "hot": {
        "route": "FROM /messages/modules/sensor/outputs/temp WHERE $body.machine.temperature > 50 "
        'INTO BrokeredEndpoint("/modules/filter/inputs/hot")',
        "priority": 1,
    },
    "severity": "FROM /messages/modules/sensor/* WHERE severity = 'high' "
    'INTO BrokeredEndpoint("/modules/alarm/inputs/in")',
    "fft": 'FROM /messages/modules/sensor/outputs/vibration INTO BrokeredEndpoint("/modules/fft/inputs/in")',
    "fftout": 'FROM /messages/modules/fft/outputs/* INTO BrokeredEndpoint("/modules/anomaly/inputs/in")',
    "anomaly": {"route": "FROM /messages/modules/anomaly/outputs/* INTO $upstream", "priority": 2},
    "leaf": "FROM /messages/* WHERE NOT is_defined($connectionModuleId) "
    'INTO BrokeredEndpoint("/modules/gw/inputs/leaf")',
    "actuate": 'FROM /messages/modules/anomaly/outputs/act INTO BrokeredEndpoint("/modules/actuator/inputs/in")',
    "debug": "FROM /messages/modules/debug/* WHERE level = 'trace' INTO $upstream",
}
BASELINE_SCHEMA = """
CREATE TABLE messages (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL, body BLOB NOT NULL, props TEXT NOT NULL,
                       enqueued_at REAL NOT NULL);
CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, endpoint TEXT NOT NULL, priority INTEGER NOT NULL,
                         expires_at REAL NOT NULL, message INTEGER NOT NULL);
"""
PROPS = '{"d":"dev1","m":"sensor","o":"temp","p":{"severity":"low"},"s":{"contentType":"application/json"}}'


def message(i: int, run: str) -> Message:
    return Message(
        id=f"{run}-{i:08d}",
        body=BODY,
        source_device="dev1",
        source_module="sensor",
        output="temp",
        properties={"severity": "low"},
        system={"contentType": "application/json", "contentEncoding": "utf-8"},
    )


def median_rate(measure: Callable[[int], tuple[int, float]], repeats: int) -> float:
    """``measure(repeat)`` returns (operations, seconds); the median rate over the repeats."""
    return statistics.median(ops / seconds for ops, seconds in (measure(r) for r in range(repeats)))


def count_for(batch: int) -> int:
    """Messages per measurement: fewer for batch 1, where every message costs an fsync."""
    return 400 if batch == 1 else 20_000


def put_outpost(directory: Path, batch: int, repeat: int) -> tuple[int, float]:
    count = count_for(batch)
    run = f"b{batch}r{repeat}"
    deliveries = [Delivery(UPSTREAM, 2_000_000_000, NOW + 7200)]
    batches = [[(message(i, run), deliveries) for i in range(s, s + batch)] for s in range(0, count, batch)]
    with SqliteStore(directory / f"{run}.db") as store:
        began = time.perf_counter()
        for items in batches:
            store.put_batch(items, NOW)
        return count, time.perf_counter() - began


def open_raw(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(BASELINE_SCHEMA)
    return db


def put_raw(directory: Path, batch: int, repeat: int) -> tuple[int, float]:
    count = count_for(batch)
    run = f"raw-b{batch}r{repeat}"
    batches = [
        [(i + 1, f"{run}-{i:08d}", BODY, PROPS, NOW) for i in range(s, s + batch)] for s in range(0, count, batch)
    ]
    db = open_raw(directory / f"{run}.db")
    try:
        began = time.perf_counter()
        for rows in batches:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO deliveries (endpoint, priority, expires_at, message) VALUES (?, ?, ?, ?)",
                [(UPSTREAM, 2_000_000_000, NOW + 7200, row[0]) for row in rows],
            )
            db.execute("COMMIT")
        return count, time.perf_counter() - began
    finally:
        db.close()


def drain_outpost(directory: Path, repeat: int) -> tuple[int, float]:
    count = 20_000
    run = f"drain{repeat}"
    deliveries = [Delivery(UPSTREAM, 2_000_000_000, NOW + 7200)]
    with SqliteStore(directory / f"{run}.db") as store:
        for s in range(0, count, 1000):
            store.put_batch([(message(i, run), deliveries) for i in range(s, s + 1000)], NOW)
        began = time.perf_counter()
        drained = 0
        while batch := store.next_batch(UPSTREAM, 500, NOW):
            store.ack(UPSTREAM, [stored.seq for stored in batch])
            drained += len(batch)
        return drained, time.perf_counter() - began


def drain_raw(directory: Path, repeat: int) -> tuple[int, float]:
    count = 20_000
    db = open_raw(directory / f"raw-drain{repeat}.db")
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?)", [(i + 1, f"m{i}", BODY, PROPS, NOW) for i in range(count)]
        )
        db.executemany(
            "INSERT INTO deliveries (endpoint, priority, expires_at, message) VALUES (?, ?, ?, ?)",
            [(UPSTREAM, 2_000_000_000, NOW + 7200, i + 1) for i in range(count)],
        )
        db.execute("COMMIT")
        began = time.perf_counter()
        drained = 0
        while rows := db.execute(
            "SELECT d.seq, m.rowid, m.id, m.body, m.props FROM deliveries AS d JOIN messages AS m "
            "ON m.rowid = d.message ORDER BY d.seq LIMIT 500"
        ).fetchall():
            decoded = [(seq, json.loads(props)) for seq, _, _, _, props in rows]
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM deliveries WHERE seq <= ?", (decoded[-1][0],))
            db.execute("DELETE FROM messages WHERE rowid <= ?", (rows[-1][1],))
            db.execute("COMMIT")
            drained += len(rows)
        return drained, time.perf_counter() - began
    finally:
        db.close()


def routing_rate(repeats: int) -> float:
    hub = EdgeHubDesired.model_validate(
        {"schemaVersion": "1.1", "routes": ROUTES, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}
    )
    table = RouteTable.from_desired(hub)
    messages = [
        Message(
            id=f"r{i}",
            body=BODY,
            source_device="dev1",
            source_module=module,
            output=output,
            properties={"severity": "high" if i % 7 == 0 else "low"},
            system={"contentType": "application/json", "contentEncoding": "utf-8"},
        )
        for i, (module, output) in enumerate(
            [("sensor", "temp"), ("sensor", "vibration"), ("fft", "out"), (None, None)] * 25
        )
    ]
    if not table.deliveries(messages[0], NOW):
        raise SystemExit("benchmark routes do not match; the numbers would be meaningless")
    deliveries = table.deliveries
    loops = 500

    def measure(_repeat: int) -> tuple[int, float]:
        began = time.perf_counter()
        for _ in range(loops):
            for item in messages:
                deliveries(item, NOW)
        return loops * len(messages), time.perf_counter() - began

    measure(0)  # warm-up: fills the per-source cache
    return median_rate(measure, repeats)


def measure_all(directory: Path, repeats: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for batch in BATCH_SIZES:
        results[f"put_b{batch}_per_s"] = median_rate(partial(put_outpost, directory, batch), repeats)
        results[f"raw_put_b{batch}_per_s"] = median_rate(partial(put_raw, directory, batch), repeats)
    results["drain_per_s"] = median_rate(partial(drain_outpost, directory), repeats)
    results["raw_drain_per_s"] = median_rate(partial(drain_raw, directory), repeats)
    results["routing_deliveries_per_s"] = routing_rate(repeats)
    return results


def table(results: dict[str, float]) -> str:
    lines = ["| measurement | outpost | raw sqlite3 | outpost / raw |", "| --- | ---: | ---: | ---: |"]
    for batch in BATCH_SIZES:
        ours, raw = results[f"put_b{batch}_per_s"], results[f"raw_put_b{batch}_per_s"]
        lines.append(f"| put_batch, batches of {batch} (msgs/s) | {ours:,.0f} | {raw:,.0f} | {ours / raw:.2f} |")
    ours, raw = results["drain_per_s"], results["raw_drain_per_s"]
    lines.append(f"| drain: next_batch(500) + ack (msgs/s) | {ours:,.0f} | {raw:,.0f} | {ours / raw:.2f} |")
    lines.append(f"| RouteTable.deliveries(), 10 routes (calls/s) | {results['routing_deliveries_per_s']:,.0f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: print a markdown table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database files (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        results = measure_all(Path(scratch), args.repeats)
    info = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version, "body_bytes": len(BODY)}
    if args.json:
        print(json.dumps({**info, **results}, indent=2))
    else:
        print(f"Python {info['python']}, SQLite {info['sqlite']}, {len(BODY)}-byte bodies, WAL + synchronous=FULL\n")
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
