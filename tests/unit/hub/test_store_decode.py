"""The store decodes each message's props from a cache of parsed props texts: messages read back
must still be independent objects, and damaged props still a StoreError."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from outpost.errors import StoreError
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.store import UPSTREAM, Delivery
from outpost.wire.message import Message

NOW = 1_700_000_000.0


def _message(mid: str, **kwargs: object) -> Message:
    fields: dict[str, object] = {
        "id": mid,
        "body": b"{}",
        "source_device": "dev1",
        "source_module": "sensor",
        "output": "out",
        "properties": {"site": "plant-a"},
        "system": {"contentType": "application/json"},
    }
    fields.update(kwargs)
    return Message(**fields)  # type: ignore[arg-type]


def test_messages_with_the_same_props_are_read_back_as_independent_objects(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "store.db") as store:
        sent = [_message("a"), _message("b"), _message("c", source_module=None, output=None, properties={})]
        store.put_batch([(m, [Delivery(UPSTREAM, 0, NOW + 60)]) for m in sent], NOW)
        first = store.next_batch(UPSTREAM, 10, NOW)
        assert [s.message for s in first] == sent
        a, b = first[0].message, first[1].message
        assert a.properties is not b.properties
        assert a.system is not b.system
        a.properties["site"] = "changed"  # type: ignore[index]  # a caller that mutates its copy
        a.system["contentType"] = "changed"  # type: ignore[index]
        again = store.next_batch(UPSTREAM, 10, NOW)
        assert [s.message for s in again] == sent


def test_damaged_props_are_still_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path) as store:
        store.put_batch([(_message("a"), [Delivery(UPSTREAM, 0, NOW + 60)])], NOW)
    db = sqlite3.connect(path)
    db.execute("""UPDATE messages SET props = '{"m": "no device"}'""")
    db.commit()
    db.close()
    with SqliteStore(path) as store:
        for _ in range(2):  # a failed parse is not cached as a success
            with pytest.raises(StoreError, match="damaged"):
                store.next_batch(UPSTREAM, 10, NOW)
