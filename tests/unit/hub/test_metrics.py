"""Hub metrics: counters from ingress and puts; queue and upstream gauges computed at scrape time."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.metrics import HubMetrics, source_label
from outpost.hub.store import UPSTREAM, Delivery, PutResult, module_endpoint
from outpost.wire.message import Message

NOW = 1_700_000_000.0
MODULE = Message(id="a", body=b"", source_device="dev1", source_module="sensor", output="temp")
LEAF = Message(id="b", body=b"", source_device="leaf7")


def value(metrics: HubMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_ingress_and_put_counters() -> None:
    metrics = HubMetrics()
    metrics.observe_ingress(MODULE, routed=True)
    metrics.observe_ingress(MODULE, routed=False)
    metrics.observe_ingress(LEAF, routed=True)
    metrics.observe_put(PutResult(stored=["a"], duplicates=["x", "y"], rejected=["z"], dropped=4))
    metrics.observe_sent(UPSTREAM, 3)
    assert source_label(LEAF) == "device:leaf7"
    assert value(metrics, "outpost_hub_messages_in_total", source="sensor") == 2
    assert value(metrics, "outpost_hub_messages_in_total", source="device:leaf7") == 1
    assert value(metrics, "outpost_hub_routed_total") == 2
    assert value(metrics, "outpost_hub_unrouted_total") == 1
    assert value(metrics, "outpost_hub_duplicates_total") == 2
    assert value(metrics, "outpost_hub_rejected_total") == 1
    assert value(metrics, "outpost_hub_dropped_total", reason="full") == 4
    assert value(metrics, "outpost_hub_dropped_total", reason="expired") == 0  # every reason is exported from 0
    assert value(metrics, "outpost_hub_messages_out_total", endpoint=UPSTREAM) == 3


def test_store_gauges_are_read_at_scrape_time(tmp_path: Path) -> None:
    metrics = HubMetrics()
    clock = [NOW]
    with SqliteStore(tmp_path / "hub.db") as store:
        metrics.watch_store(store, lambda: clock[0])
        assert value(metrics, "outpost_hub_queue_depth", endpoint=UPSTREAM) is None
        store.put_batch(
            [
                (MODULE, [Delivery(UPSTREAM, 0, NOW + 60), Delivery(module_endpoint("f", "in"), 0, NOW + 60)]),
                (LEAF, [Delivery(UPSTREAM, 1, NOW + 60)]),
            ],
            NOW - 30,
        )
        assert value(metrics, "outpost_hub_queue_depth", endpoint=UPSTREAM) == 2
        assert value(metrics, "outpost_hub_queue_depth", endpoint="module:f/in") == 1
        assert value(metrics, "outpost_hub_queue_oldest_age_seconds", endpoint=UPSTREAM) == 30
        assert (value(metrics, "outpost_hub_store_size_bytes") or 0) > 0
    assert b"outpost_hub_queue_depth" not in generate_latest(metrics.registry)  # closed store: skipped, no error


def test_upstream_gauges() -> None:
    metrics = HubMetrics()
    clock = [NOW]
    metrics.watch_store(_NoStore(), lambda: clock[0])  # type: ignore[arg-type]
    assert value(metrics, "outpost_hub_upstream_connected") is None  # unknown until reported
    metrics.set_upstream_connected(False, NOW - 40)
    metrics.set_upstream_connected(False, NOW - 10)  # still down: the outage began at the first report
    assert value(metrics, "outpost_hub_upstream_connected") == 0
    assert value(metrics, "outpost_hub_upstream_offline_seconds") == 40
    metrics.set_upstream_connected(True, NOW)
    assert value(metrics, "outpost_hub_upstream_connected") == 1
    assert value(metrics, "outpost_hub_upstream_offline_seconds") == 0


class _NoStore:
    """A store with nothing queued (only what the collector calls)."""

    def endpoints(self) -> list[str]:
        return []

    def size_bytes(self) -> int:
        return 0
