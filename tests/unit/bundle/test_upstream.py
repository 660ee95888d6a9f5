"""Bundle up over the real SQLite store and a scripted sink: nothing removed by export, a sink that
refuses some messages keeps them out of the receipt (and a later import delivers them), duplicates
are dropped by id, release acks exactly what the receipt names, signed receipts under a trust root."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from outpost.bundle.layout import BundleError
from outpost.bundle.upstream import export_upstream, import_upstream, release
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.sinks import FailureKind, SinkResult
from outpost.hub.store import UPSTREAM, Delivery, Stored, module_endpoint
from outpost.trust.keys import generate, key_id, read_private, read_public
from outpost.wire.message import Message, new_id


class Sink:
    """Records what it delivered; refuses (retryable) the ids in ``down``."""

    name = "scripted"

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.down: set[str] = set()

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        result = SinkResult()
        for item in batch:
            if item.message.id in self.down:
                result.retryable.append(item.seq)
                result.failure = FailureKind.UNREACHABLE
            else:
                self.delivered.append(item.message.id)
                result.succeeded.append(item.seq)
        return result

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


def device_store(path: Path, count: int) -> tuple[SqliteStore, list[str]]:
    store = SqliteStore(path)
    messages = [Message(new_id(), f'{{"i":{i}}}'.encode(), "dev-1", "sensor", "out", {"k": "v"}) for i in range(count)]
    far = 4e9
    store.put_batch([(m, [Delivery(UPSTREAM, 0, far), Delivery(module_endpoint("x", "in"), 0, far)]) for m in messages],
                    1.0)  # fmt: skip
    return store, [m.id for m in messages]


def queued(store: SqliteStore) -> list[str]:
    return [s.message.id for s in store.next_batch(UPSTREAM, 10_000, 2.0)]


def test_export_import_release(tmp_path):
    device, ids = device_store(tmp_path / "device.db", 30)
    generate(tmp_path / "dev")
    key = read_private(tmp_path / "dev.key")
    out = export_upstream(device, device_id="dev-1", reported={"$edgeAgent": {"x": 1}}, key=key,
                          output=tmp_path / "up.tar", now=lambda: 2.0)  # fmt: skip
    assert out.messages == 30
    assert sorted(queued(device)) == sorted(ids)  # nothing removed

    ledger = SqliteStore(tmp_path / "ledger.db", dedupe_window_secs=1e9)
    sink = Sink()
    sink.down = set(ids[:5])
    first = import_upstream(out.path, store=ledger, sink=sink, rounds=1, sleep=lambda _s: None)
    assert sorted(first.delivered) == sorted(ids[5:])
    assert sorted(first.pending) == sorted(ids[:5])
    assert first.receipt["messages"] == sorted(ids[5:])  # what did not arrive is not released
    assert first.reported == {"$edgeAgent": {"x": 1}}
    sink.down = set()
    second = import_upstream(out.path, store=ledger, sink=sink, sleep=lambda _s: None)
    assert sorted(second.delivered) == []  # the five were queued in the ledger: delivered, but not "new"
    assert sorted(second.duplicates) == sorted(ids)
    assert sorted(sink.delivered) == sorted(ids)  # each exactly once at the far end
    assert second.receipt["messages"] == sorted(ids)

    with pytest.raises(BundleError, match="for device 'dev-1', not 'other'"):
        release(device, first.receipt, device_id="other", trusted={})
    done = release(device, first.receipt, device_id="dev-1", trusted={})
    assert (done.released, done.already_gone) == (25, 0)
    assert sorted(queued(device)) == sorted(ids[:5])
    assert device.depth(module_endpoint("x", "in")) == 30  # other endpoints' deliveries untouched


def test_signed_receipts_and_pinned_device_keys(tmp_path):
    device, ids = device_store(tmp_path / "device.db", 3)
    generate(tmp_path / "dev")
    generate(tmp_path / "op")
    out = export_upstream(device, device_id="dev-1", reported={}, key=read_private(tmp_path / "dev.key"),
                          output=tmp_path / "up.tar")  # fmt: skip
    ledger = SqliteStore(tmp_path / "ledger.db")
    with pytest.raises(BundleError, match="not by"):
        import_upstream(out.path, store=ledger, sink=Sink(), device_keys=["0" * 16])
    op = read_private(tmp_path / "op.key")
    result = import_upstream(out.path, store=ledger, sink=Sink(), device_keys=[out.key_id], sign_key=op)
    trusted = {key_id(read_public(tmp_path / "op.pub")): read_public(tmp_path / "op.pub")}
    unsigned = {k: v for k, v in result.receipt.items() if k != "signatures"}
    with pytest.raises(BundleError, match="unsigned receipt refused"):
        release(device, unsigned, device_id="dev-1", trusted=trusted)
    with pytest.raises(BundleError, match="changed after signing"):
        release(device, dict(result.receipt, messages=ids[:1]), device_id="dev-1", trusted=trusted)
    assert release(device, result.receipt, device_id="dev-1", trusted=trusted).released == 3


def test_a_damaged_export_is_refused(tmp_path):
    device, _ = device_store(tmp_path / "device.db", 3)
    generate(tmp_path / "dev")
    out = export_upstream(device, device_id="dev-1", reported={}, key=read_private(tmp_path / "dev.key"),
                          output=tmp_path / "up.tar")  # fmt: skip
    data = out.path.read_bytes()
    at = data.index(b'"body":"')
    (tmp_path / "short.tar").write_bytes(data[: at + 20])  # cut inside messages.jsonl
    ledger = SqliteStore(tmp_path / "ledger.db")
    with pytest.raises(BundleError, match=r"truncated|not an upstream export"):
        import_upstream(tmp_path / "short.tar", store=ledger, sink=Sink())
    (tmp_path / "flip.tar").write_bytes(data[:at] + b"[" + data[at + 1 :])
    with pytest.raises(BundleError, match="altered"):
        import_upstream(tmp_path / "flip.tar", store=ledger, sink=Sink())
    assert ledger.depth(UPSTREAM) == 0
