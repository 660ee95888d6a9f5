"""The batch PUBLISH layout (outpost.wire.batch): round trips, splitting, and bad payloads."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outpost.wire import batch as batches
from outpost.wire.batch import BatchError, Framed

ITEM = Framed("out", (("$.mid", "a1"), ("kind", "x")), "application/json", b'{"t":1}')


def test_round_trip_keeps_order_properties_and_bodies() -> None:
    items = [ITEM, Framed("alerts", (), None, b""), Framed("bin", (("k", "é"),), None, bytes(range(256)))]
    assert batches.decode(batches.encode(items)) == items


def test_empty_batch_round_trips() -> None:
    assert batches.decode(batches.encode([])) == []


names = st.text(min_size=1, max_size=8)
pairs = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3).map(tuple)
framed = st.builds(Framed, names, pairs, st.none() | st.text(max_size=10), st.binary(max_size=64))


@given(st.lists(framed, max_size=20))
def test_any_batch_round_trips(items: list[Framed]) -> None:
    assert batches.decode(batches.encode(items)) == items


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_batch_error(payload: bytes) -> None:
    with contextlib.suppress(BatchError):
        batches.decode(payload)


def _payload(header: object, bodies: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return b"OPB1" + struct.pack(">I", len(raw)) + raw + bodies


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"OPB", "shorter than its 8-byte prefix"),
        (b"XXXX\x00\x00\x00\x00", "not b'OPB1'"),
        (b"OPB1\x00\x00\x00\x09[]", "runs past the end"),
        (b"OPB1\x00\x00\x00\x02{]", "header is not JSON"),
        (_payload({"a": 1}), "must be a JSON array"),
        (_payload([["out", [], None]]), "batch message 0: expected [name, properties, content type, length]"),
        (_payload([["", [], None, 0]]), "batch message 0: the name must be a non-empty string"),
        (_payload([["out", [["k"]], None, 0]]), "batch message 0: properties must be a list"),
        (_payload([["out", [], 5, 0]]), "batch message 0: the content type must be a string or null"),
        (_payload([["out", [], None, -1]]), "batch message 0: the body length must be a non-negative integer"),
        (_payload([["out", [], None, True]]), "the body length must be a non-negative integer"),
        (_payload([["out", [], None, 1], ["out", [], None, 5]], b"abc"), "batch message 1: its 5-byte body runs past"),
        (_payload([["out", [], None, 1]], b"abc"), "2 byte(s) after its last message"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, says: str) -> None:
    with pytest.raises(BatchError) as caught:
        batches.decode(payload)
    assert says in str(caught.value)


def test_chunks_split_by_count_and_size_and_keep_order() -> None:
    items = [Framed("o", (("$.mid", str(i)),), None, b"x" * 10) for i in range(7)]
    runs = list(batches.chunks(items, max_messages=3))
    assert [len(r) for r in runs] == [3, 3, 1]
    assert [i for r in runs for i in r] == items
    big = Framed("o", (), None, b"y" * 1000)
    runs = list(batches.chunks([items[0], big, items[1]], max_bytes=500))
    assert [len(r) for r in runs] == [1, 1, 1]  # the oversized message travels alone
    assert list(batches.chunks([])) == []
