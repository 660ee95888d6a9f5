"""``SqliteStore``: the hub's durable ``MessageStore`` (SQLite, WAL mode, ``synchronous=FULL``).

Used by the hub's ingress (``put_batch``), its pumps (``next_batch``/``ack``/``dead_letter``), its
purger (``purge_expired``) and its metrics (``depth``, ``oldest_enqueued``, ``size_bytes``). One
connection serves every thread, one call at a time (a lock); each call is one transaction, so a
call that raises :class:`~outpost.errors.StoreError` changed nothing.

Layout::

    messages      rowid, id UNIQUE, body, props (JSON), enqueued_at     one row per stored message
    deliveries    seq AUTOINCREMENT, endpoint, priority, expires_at,    one row per (message, endpoint);
                  message -> messages.rowid                             the queues, read by
                                                                        (endpoint, priority, seq)
    dead_letters  a copy of each never-deliverable delivery, with reason and time
    seen          recently stored ids, for duplicate detection

Disk cap: the space in use is ``(page_count - freelist_count) * page_size``, read from SQLite
itself, so the cap holds to within a few pages. ``reject-new`` refuses a message that would not
fit; ``drop-oldest`` first deletes the oldest deliveries of the lowest priority (never ones more
important than the incoming message) and their orphaned bodies. ``purge_expired`` hands freed
pages back to the file system (``auto_vacuum=INCREMENTAL``) and truncates the WAL, so the file
shrinks after a drain (Azure edgeHub's store never does: iotedge#2674, #3981).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from outpost.errors import StoreError
from outpost.hub.store import Delivery, FullPolicy, PutResult, Stored
from outpost.wire.message import Message

__all__ = ["DeadLetter", "SqliteStore"]

DAY: Final = 86_400.0
_PURGE_CHUNK: Final = 5_000  # expired deliveries deleted per transaction (the lock is released between)
_VACUUM_MIN_FREE_PAGES: Final = 256  # below this (1 MiB at 4 KiB pages) free pages are kept for reuse
_ROW_OVERHEAD: Final = 160  # bytes per message beyond body, props and id: row headers and index entries
_DELIVERY_OVERHEAD: Final = 96  # bytes per delivery row with its three index entries

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    props TEXT NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    priority INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    message INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (endpoint, priority, seq);
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    priority INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    props TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    id TEXT PRIMARY KEY,
    forget_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_forget ON seen (forget_at);
"""

_NEXT_QUERY: Final = """
SELECT d.seq, d.priority, d.expires_at, m.enqueued_at, m.id, m.body, m.props
FROM deliveries AS d INDEXED BY deliveries_queue JOIN messages AS m ON m.rowid = d.message
WHERE d.endpoint = ? AND d.expires_at > ?{skipping}
ORDER BY d.priority, d.seq
LIMIT ?
"""
_NEXT: Final = _NEXT_QUERY.format(skipping="")
_NEXT_SKIPPING: Final = _NEXT_QUERY.format(skipping=" AND d.seq NOT IN (SELECT value FROM json_each(?))")
# Acking: both statements are one step each (no rows come back to Python), so a pump acking on a
# helper thread holds the GIL only to start them. Bodies first: those whose every remaining
# delivery is among the acked ones.
_ACKED_BODIES: Final = """
DELETE FROM messages
WHERE rowid IN (SELECT d.message FROM deliveries AS d
                WHERE +d.endpoint = ?1 AND d.seq IN (SELECT value FROM json_each(?2)))
  AND NOT EXISTS (SELECT 1 FROM deliveries AS o
                  WHERE o.message = messages.rowid
                    AND NOT (o.endpoint = ?1 AND o.seq IN (SELECT value FROM json_each(?2))))
"""
_ACKED_DELIVERIES: Final = "DELETE FROM deliveries WHERE +endpoint = ?1 AND seq IN (SELECT value FROM json_each(?2))"
_ORPHANS: Final = """
DELETE FROM messages
WHERE rowid IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.message = messages.rowid)
"""


_DEAD_SELECT: Final = (
    "SELECT seq, endpoint, priority, message_id, body, props, enqueued_at, reason, dead_at FROM dead_letters"
)


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that can never succeed, kept for inspection (``outpost hub dead-letters``)."""

    seq: int
    endpoint: str
    priority: int
    message: Message
    enqueued_at: float
    reason: str
    dead_at: float


class SqliteStore:
    """A ``MessageStore`` in one SQLite file; see the module docstring. Thread-safe.

    ``dedupe_window_secs`` bounds how long an id is remembered after it was stored (the longest
    TTL among its deliveries, at most this); ids of messages still queued are always recognised.
    ``dead_letter_retention_secs``: how long dead letters are kept before ``purge_expired``
    deletes them. ``clock`` stamps dead letters and ages the ``seen`` and dead-letter tables.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int | None = None,
        full_policy: FullPolicy = FullPolicy.DROP_OLDEST,
        dedupe_window_secs: float = 3600.0,
        dead_letter_retention_secs: float = 7 * DAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise StoreError(f"max_bytes must be positive, not {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.full_policy = FullPolicy(full_policy)
        self._dedupe_window = dedupe_window_secs
        self._dead_letter_retention = dead_letter_retention_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open message store {self.path}: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot initialise message store {self.path}: {exc}") from exc
        self._page_size = int(self._pragma("page_size"))

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table exists
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"the file system refused WAL mode ({mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA journal_size_limit = 4194304")  # the WAL is truncated back to 4 MiB at most
        db.execute("PRAGMA foreign_keys = OFF")
        db.executescript(_SCHEMA)

    # --- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[sqlite3.Connection]:
        """The lock plus error translation; every public method runs inside one."""
        with self._lock:
            if self._closed:
                raise StoreError(f"message store {self.path} is closed ({what})")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"message store {self.path}: {what} failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """``_guard`` plus BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error)."""
        with self._guard(what) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise

    def _pragma(self, name: str) -> int:
        return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

    def _used_bytes(self) -> int:
        return (self._pragma("page_count") - self._pragma("freelist_count")) * self._page_size

    # --- ingress -----------------------------------------------------------------------------

    def put_batch(self, items: Sequence[tuple[Message, Sequence[Delivery]]], now: float) -> PutResult:
        """Store messages and their deliveries in one durable transaction; see ``PutResult``.

        A message with no delivery is reported stored (it may be acknowledged) but nothing is
        written for it.
        """
        result = PutResult()
        with self._transaction("put_batch") as db:
            known = self._known_ids(db, [message.id for message, deliveries in items if deliveries])
            accepted: list[tuple[Message, Sequence[Delivery], str]] = []
            for message, deliveries in items:
                if not deliveries:
                    result.stored.append(message.id)
                elif message.id in known:
                    result.duplicates.append(message.id)
                else:
                    known.add(message.id)  # a repeat later in this batch is a duplicate too
                    accepted.append((message, deliveries, _encode_props(message)))
            room = _Room(self, db) if self.max_bytes is not None else None
            if room is None or room.comfortable(sum(_estimate(*entry) for entry in accepted)):
                self._insert(db, accepted, now)
                result.stored += [message.id for message, _, _ in accepted]
            else:  # near the cap: message by message, measuring (and making room) as we go
                for entry in accepted:
                    message, deliveries, _ = entry
                    db.execute("SAVEPOINT room")
                    fits, dropped = room.make(_estimate(*entry), min(d.priority for d in deliveries))
                    if fits:
                        self._insert(db, [entry], now)
                        result.stored.append(message.id)
                        result.dropped += dropped
                    else:  # dropping did not make enough room: keep what was dropped, refuse this one
                        db.execute("ROLLBACK TO room")
                        result.rejected.append(message.id)
                    db.execute("RELEASE room")
        return result

    def _known_ids(self, db: sqlite3.Connection, ids: list[str]) -> set[str]:
        """Ids among ``ids`` already stored: remembered in ``seen`` or still queued."""
        if not ids:
            return set()
        wanted = json.dumps(ids)
        rows = db.execute(
            """SELECT id FROM seen WHERE id IN (SELECT value FROM json_each(?1))
               UNION ALL SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1))""",
            (wanted,),
        ).fetchall()
        return {row[0] for row in rows}

    def _insert(
        self, db: sqlite3.Connection, accepted: list[tuple[Message, Sequence[Delivery], str]], now: float
    ) -> None:
        """Insert messages (new ids only), their deliveries and their ``seen`` entries."""
        if not accepted:
            return
        top = db.execute("SELECT max(rowid) FROM messages").fetchone()[0] or 0
        messages, deliveries, seen = [], [], []
        for offset, (message, targets, props) in enumerate(accepted, start=1):
            rowid = top + offset  # explicit: we are the only writer inside this transaction
            messages.append((rowid, message.id, message.body, props, now))
            deliveries += [(d.endpoint, d.priority, d.expires_at, rowid) for d in targets]
            longest = max(d.expires_at for d in targets) - now
            seen.append((message.id, now + max(0.0, min(longest, self._dedupe_window))))
        db.executemany("INSERT INTO messages (rowid, id, body, props, enqueued_at) VALUES (?, ?, ?, ?, ?)", messages)
        db.executemany(
            "INSERT INTO deliveries (endpoint, priority, expires_at, message) VALUES (?, ?, ?, ?)", deliveries
        )
        db.executemany("INSERT OR REPLACE INTO seen (id, forget_at) VALUES (?, ?)", seen)

    # --- pumps --------------------------------------------------------------------------------

    def next_batch(self, endpoint: str, limit: int, now: float, skip: Collection[int] = ()) -> list[Stored]:
        """Up to ``limit`` unexpired deliveries of ``endpoint`` but ``skip``: priority 0 first, then by seq."""
        if limit <= 0:
            return []
        with self._guard("next_batch") as db:
            if skip:
                rows = db.execute(_NEXT_SKIPPING, (endpoint, now, json.dumps(list(skip)), limit)).fetchall()
            else:
                rows = db.execute(_NEXT, (endpoint, now, limit)).fetchall()
        return [
            Stored(seq, endpoint, priority, enqueued_at, expires_at, _decode_message(mid, body, props))
            for seq, priority, expires_at, enqueued_at, mid, body, props in rows
        ]

    def ack(self, endpoint: str, seqs: Sequence[int]) -> None:
        """Delete delivered deliveries (unknown seqs are ignored) and bodies nobody needs any more."""
        if not seqs:
            return
        with self._transaction("ack") as db:
            self._delete_deliveries(db, endpoint, seqs)

    def dead_letter(self, endpoint: str, seqs: Sequence[int], reason: str) -> None:
        """Move deliveries that can never succeed to ``dead_letters`` with ``reason`` and the time."""
        if not seqs:
            return
        with self._transaction("dead_letter") as db:
            db.execute(
                """INSERT INTO dead_letters
                       (endpoint, priority, message_id, body, props, enqueued_at, reason, dead_at)
                   SELECT d.endpoint, d.priority, m.id, m.body, m.props, m.enqueued_at, ?, ?
                   FROM deliveries AS d JOIN messages AS m ON m.rowid = d.message
                   WHERE +d.endpoint = ? AND d.seq IN (SELECT value FROM json_each(?))
                   ORDER BY d.seq""",
                (reason, self._clock(), endpoint, json.dumps(list(seqs))),
            )
            self._delete_deliveries(db, endpoint, seqs)

    @staticmethod
    def _delete_deliveries(db: sqlite3.Connection, endpoint: str, seqs: Sequence[int]) -> None:
        listed = json.dumps(list(seqs))
        db.execute(_ACKED_BODIES, (endpoint, listed))
        db.execute(_ACKED_DELIVERIES, (endpoint, listed))

    # --- housekeeping ------------------------------------------------------------------------

    def purge_expired(self, now: float) -> int:
        """Delete expired deliveries of every endpoint (consumed or not), their orphaned bodies,
        forgotten ids and old dead letters; then give free pages back. Returns deliveries purged."""
        purged = 0
        while True:  # in chunks, so ingress and pumps get the lock in between
            with self._transaction("purge_expired") as db:
                rows = db.execute(
                    """DELETE FROM deliveries WHERE seq IN (
                           SELECT seq FROM deliveries INDEXED BY deliveries_expiry WHERE expires_at <= ? LIMIT ?)
                       RETURNING message""",
                    (now, _PURGE_CHUNK),
                ).fetchall()
                if rows:
                    db.execute(_ORPHANS, (json.dumps(sorted({row[0] for row in rows})),))
            purged += len(rows)
            if len(rows) < _PURGE_CHUNK:
                break
        with self._transaction("purge_expired") as db:
            db.execute("DELETE FROM seen WHERE forget_at <= ?", (now,))
            db.execute("DELETE FROM dead_letters WHERE dead_at <= ?", (self._clock() - self._dead_letter_retention,))
        self.reclaim()
        return purged

    def reclaim(self) -> None:
        """Give free pages back to the file system and truncate the WAL (``purge_expired`` calls it)."""
        with self._guard("reclaim") as db:
            if self._pragma("freelist_count") >= _VACUUM_MIN_FREE_PAGES:
                db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # --- inspection ----------------------------------------------------------------------------

    def depth(self, endpoint: str) -> int:
        """Deliveries queued for ``endpoint``, including expired ones not yet purged."""
        with self._guard("depth") as db:
            row = db.execute(
                "SELECT count(*) FROM deliveries INDEXED BY deliveries_queue WHERE endpoint = ?", (endpoint,)
            ).fetchone()
        return int(row[0])

    def oldest_enqueued(self, endpoint: str) -> float | None:
        """When the oldest message queued for ``endpoint`` was stored, or None if its queue is empty."""
        with self._guard("oldest_enqueued") as db:
            oldest: int | None = None
            for priority in self._priorities(db, endpoint):
                row = db.execute(
                    "SELECT min(seq) FROM deliveries WHERE endpoint = ? AND priority = ?", (endpoint, priority)
                ).fetchone()
                if row[0] is not None and (oldest is None or row[0] < oldest):
                    oldest = int(row[0])
            if oldest is None:
                return None
            row = db.execute(
                "SELECT m.enqueued_at FROM deliveries AS d JOIN messages AS m ON m.rowid = d.message WHERE d.seq = ?",
                (oldest,),
            ).fetchone()
        return None if row is None else float(row[0])

    def endpoints(self) -> list[str]:
        """Endpoints with queued deliveries, sorted (each found by an index seek, not a scan)."""
        with self._guard("endpoints") as db:
            return self._endpoints(db)

    def size_bytes(self) -> int:
        """The database file's size as SQLite sees it (the WAL, at most a few MiB, comes on top)."""
        with self._guard("size_bytes"):
            return self._pragma("page_count") * self._page_size

    def used_bytes(self) -> int:
        """Bytes in use (free pages excluded): what the disk cap is compared with."""
        with self._guard("used_bytes"):
            return self._used_bytes()

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        with self._guard("dead_letters") as db:
            rows = db.execute(f"{_DEAD_SELECT} ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_dead_letter(row) for row in rows]

    def requeue_dead_letters(self, seqs: Sequence[int] | None, expires_at: float) -> list[DeadLetter]:
        """Queue dead letters (``seqs``, or all when None) for their endpoint again, expiring at
        ``expires_at``; returns those re-queued (unknown seqs are ignored). For ``outpost hub dead-letters``."""
        with self._transaction("requeue_dead_letters") as db:
            rows = self._dead_rows(db, seqs)
            for seq, endpoint, priority, mid, body, props, enqueued_at, _, _ in rows:
                db.execute(
                    """INSERT INTO messages (id, body, props, enqueued_at) VALUES (?, ?, ?, ?)
                       ON CONFLICT(id) DO NOTHING""",
                    (mid, body, props, enqueued_at),
                )
                db.execute(
                    """INSERT INTO deliveries (endpoint, priority, expires_at, message)
                       SELECT ?, ?, ?, rowid FROM messages WHERE id = ?""",
                    (endpoint, priority, expires_at, mid),
                )
                db.execute("DELETE FROM dead_letters WHERE seq = ?", (seq,))
        return [_dead_letter(row) for row in rows]

    def purge_dead_letters(self, seqs: Sequence[int] | None) -> int:
        """Delete dead letters (``seqs``, or all when None); returns how many were deleted."""
        with self._transaction("purge_dead_letters") as db:
            if seqs is None:
                cursor = db.execute("DELETE FROM dead_letters")
            else:
                cursor = db.execute(
                    "DELETE FROM dead_letters WHERE seq IN (SELECT value FROM json_each(?))", (json.dumps(list(seqs)),)
                )
            return int(cursor.rowcount)

    def dead_letter_count(self) -> int:
        with self._guard("dead_letter_count") as db:
            return int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    @staticmethod
    def _dead_rows(db: sqlite3.Connection, seqs: Sequence[int] | None) -> list[Any]:
        select = (
            "SELECT seq, endpoint, priority, message_id, body, props, enqueued_at, reason, dead_at FROM dead_letters"
        )
        if seqs is None:
            return db.execute(f"{select} ORDER BY seq").fetchall()
        return db.execute(
            f"{select} WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq", (json.dumps(list(seqs)),)
        ).fetchall()

    def close(self) -> None:
        """Checkpoint and close; later calls raise StoreError. Closing twice is fine."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # the WAL is replayed at the next open
            finally:
                self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- helpers (the lock is held) -----------------------------------------------------------

    def _endpoints(self, db: sqlite3.Connection) -> list[str]:
        found: list[str] = []
        row = db.execute("SELECT min(endpoint) FROM deliveries").fetchone()
        while row[0] is not None:
            found.append(str(row[0]))
            row = db.execute("SELECT min(endpoint) FROM deliveries WHERE endpoint > ?", (row[0],)).fetchone()
        return found

    def _priorities(self, db: sqlite3.Connection, endpoint: str) -> list[int]:
        found: list[int] = []
        row = db.execute("SELECT min(priority) FROM deliveries WHERE endpoint = ?", (endpoint,)).fetchone()
        while row[0] is not None:
            found.append(int(row[0]))
            row = db.execute(
                "SELECT min(priority) FROM deliveries WHERE endpoint = ? AND priority > ?", (endpoint, row[0])
            ).fetchone()
        return found


class _Room:
    """Disk-cap bookkeeping for one ``put_batch`` (inside its transaction).

    The precise measure (two PRAGMAs) is taken only when an estimate says the batch is near the
    cap, so an uncapped-in-practice store pays almost nothing.
    """

    def __init__(self, store: SqliteStore, db: sqlite3.Connection) -> None:
        assert store.max_bytes is not None
        self._store = store
        self._db = db
        self._cap = store.max_bytes
        self._base = store._used_bytes()
        self._added = 0  # estimated bytes added since _base was measured

    def comfortable(self, need: int) -> bool:
        """Whether ``need`` estimated bytes are clearly below the cap (no measuring, nothing to drop)."""
        if self._base + 2 * (self._added + need) + 4 * self._store._page_size < self._cap:
            self._added += need
            return True
        return False

    def make(self, need: int, priority: int) -> tuple[bool, int]:
        """Whether ``need`` more bytes fit (after dropping, under drop-oldest); and deliveries dropped."""
        if self.comfortable(need):
            return True, 0
        used = self._store._used_bytes()
        self._base, self._added = used, need
        need += self._store._page_size  # an insert may start a new page in a table or an index
        if used + need <= self._cap:
            return True, 0
        if self._store.full_policy is not FullPolicy.DROP_OLDEST:
            return False, 0
        dropped = 0
        while used + need > self._cap:
            count = self._drop(priority, max(4, (used + need - self._cap) // 512))
            if count == 0:
                return False, dropped
            dropped += count
            used = self._store._used_bytes()
        self._base = used
        return True, dropped

    def _drop(self, priority: int, count: int) -> int:
        """Delete up to ``count`` of the oldest deliveries of the lowest priority >= ``priority``."""
        db = self._db
        store = self._store
        lowest: int | None = None
        endpoints = []
        for endpoint in store._endpoints(db):
            row = db.execute("SELECT max(priority) FROM deliveries WHERE endpoint = ?", (endpoint,)).fetchone()
            if row[0] is None or row[0] < priority:
                continue
            if lowest is None or row[0] > lowest:
                lowest, endpoints = int(row[0]), [endpoint]
            elif row[0] == lowest:
                endpoints.append(endpoint)
        if lowest is None:
            return 0
        candidates: list[tuple[int, int]] = []
        for endpoint in endpoints:
            candidates += db.execute(
                "SELECT seq, message FROM deliveries INDEXED BY deliveries_queue "
                "WHERE endpoint = ? AND priority = ? ORDER BY seq LIMIT ?",
                (endpoint, lowest, count),
            ).fetchall()
        victims = sorted(candidates)[:count]
        db.execute(
            "DELETE FROM deliveries WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps([s for s, _ in victims]),),
        )
        db.execute(_ORPHANS, (json.dumps(sorted({m for _, m in victims})),))
        return len(victims)


def _estimate(message: Message, deliveries: Sequence[Delivery], props: str) -> int:
    """Bytes a message will take on disk, rows and index entries included (a generous guess)."""
    size = len(message.body) + len(props) + 3 * len(message.id) + _ROW_OVERHEAD
    return size + sum(_DELIVERY_OVERHEAD + 2 * len(d.endpoint) for d in deliveries)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encode_props(message: Message) -> str:
    document: dict[str, Any] = {"d": message.source_device}
    if message.source_module is not None:
        document["m"] = message.source_module
    if message.output is not None:
        document["o"] = message.output
    if message.properties:
        document["p"] = dict(message.properties)
    if message.system:
        document["s"] = dict(message.system)
    return _ENCODER.encode(document)


@functools.lru_cache(maxsize=1024)
def _parse_props(props: str) -> tuple[str, str | None, str | None, dict[str, str], dict[str, str]]:
    """A ``props`` column, parsed. Cached: a source's messages mostly carry the very same props text."""
    document = json.loads(props)
    return document["d"], document.get("m"), document.get("o"), document.get("p", {}), document.get("s", {})


def _decode_message(mid: str, body: bytes, props: str) -> Message:
    try:
        device, module, output, properties, system = _parse_props(props)
        return Message(
            id=mid,
            body=bytes(body),
            source_device=device,
            source_module=module,
            output=output,
            properties=dict(properties),  # copies: the parsed ones are shared through the cache
            system=dict(system),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"stored message {mid!r} is damaged: {exc}") from exc


def _dead_letter(row: Any) -> DeadLetter:
    seq, endpoint, priority, mid, body, props, enqueued_at, reason, dead_at = row
    return DeadLetter(seq, endpoint, priority, _decode_message(mid, body, props), enqueued_at, reason, dead_at)
