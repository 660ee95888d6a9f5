"""Message ids: UUIDv7 in 32 hex digits, time-ordered across milliseconds, unique."""

from __future__ import annotations

import time
import uuid

from outpost.wire.message import new_id


def test_ids_are_uuid7_hex_and_unique() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:100]:
        assert len(value) == 32
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_the_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(first[:12], 16) <= int(second[:12], 16) <= after
    assert first < second  # a later millisecond sorts later: the store's indexes grow at one end
