"""Prometheus metrics of the hub, in a registry of its own (several hubs per process in tests).

Counters are fed by ingress (:meth:`HubMetrics.observe_ingress`, :meth:`HubMetrics.observe_put`),
the pumps (``messages_out``, ``dropped{reason="invalid"}``) and the purger
(``dropped{reason="expired"}``). Queue depth, oldest age, store size and the upstream link are
gauges computed when the registry is scraped (:meth:`HubMetrics.watch_store`,
:meth:`HubMetrics.set_upstream_connected`), so nothing has to refresh them on a timer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outpost.errors import OutpostError
from outpost.hub.store import MessageStore, PutResult
from outpost.wire.message import Message

__all__ = ["DROP_REASONS", "HubMetrics", "source_label"]

DROP_REASONS = ("expired", "full", "invalid", "malformed")


def source_label(message: Message) -> str:
    """The ``source`` label of a message: its module id, or ``device:ID`` for a leaf device."""
    return message.source_module if message.source_module is not None else f"device:{message.source_device}"


class HubMetrics:
    """Messages in/out, routed/unrouted, duplicates, drops by reason; queue and upstream gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.messages_in = Counter(
            "outpost_hub_messages_in", "Messages received by ingress, by source.", ["source"], registry=registry
        )
        self.messages_out = Counter(
            "outpost_hub_messages_out", "Deliveries acknowledged by their endpoint.", ["endpoint"], registry=registry
        )
        self.routed = Counter("outpost_hub_routed", "Messages at least one route took.", registry=registry)
        self.unrouted = Counter("outpost_hub_unrouted", "Messages no route took.", registry=registry)
        self.duplicates = Counter(
            "outpost_hub_duplicates", "Messages dropped because their id was already stored.", registry=registry
        )
        self.rejected = Counter(
            "outpost_hub_rejected",
            "Messages refused by a full store (reject-new; the sender retries).",
            registry=registry,
        )
        self.dropped = Counter(
            "outpost_hub_dropped",
            "Deliveries given up, by reason: expired (TTL), full (drop-oldest), invalid (dead-lettered), "
            "malformed (a PUBLISH the hub cannot read: unknown topic, unreadable batch).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)
        self._gauges = _Gauges()
        registry.register(self._gauges)

    # --- counters -------------------------------------------------------------------------------

    def observe_ingress(self, message: Message, *, routed: bool) -> None:
        """One message seen by ingress; ``routed`` is whether ``RouteTable.deliveries`` was non-empty."""
        self.messages_in.labels(source=source_label(message)).inc()
        (self.routed if routed else self.unrouted).inc()

    def observe_put(self, result: PutResult) -> None:
        """What one ``put_batch`` did: duplicates, rejections and drop-oldest drops."""
        if result.duplicates:
            self.duplicates.inc(len(result.duplicates))
        if result.rejected:
            self.rejected.inc(len(result.rejected))
        if result.dropped:
            self.dropped.labels(reason="full").inc(result.dropped)

    def observe_sent(self, endpoint: str, count: int) -> None:
        if count:
            self.messages_out.labels(endpoint=endpoint).inc(count)

    def observe_dropped(self, reason: str, count: int) -> None:
        if count:
            self.dropped.labels(reason=reason).inc(count)

    # --- gauges computed at scrape time ------------------------------------------------------------

    def watch_store(self, store: MessageStore, clock: Callable[[], float] = time.time) -> None:
        """Report queue depth and oldest age per endpoint and the store size from ``store`` on scrape."""
        self._gauges.store = store
        self._gauges.clock = clock

    def set_upstream_connected(self, connected: bool, now: float) -> None:
        """Record the upstream link state; offline seconds count from the first report of ``False``."""
        self._gauges.set_upstream(connected, now)


class _Gauges(Collector):
    """Collects gauges on demand; store errors (a closed store) yield no store gauges, never a failed scrape."""

    def __init__(self) -> None:
        self.store: MessageStore | None = None
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._connected: bool | None = None
        self._offline_since: float | None = None

    def set_upstream(self, connected: bool, now: float) -> None:
        with self._lock:
            if connected:
                self._offline_since = None
            elif self._offline_since is None:
                self._offline_since = now
            self._connected = connected

    def collect(self) -> Iterable[Metric]:
        now = self.clock()
        yield from self._store_gauges(now)
        with self._lock:
            connected, since = self._connected, self._offline_since
        if connected is not None:
            up = GaugeMetricFamily("outpost_hub_upstream_connected", "Whether the upstream link is up (1) or not (0).")
            up.add_metric([], 1.0 if connected else 0.0)
            offline = GaugeMetricFamily(
                "outpost_hub_upstream_offline_seconds", "Seconds since the upstream link went down (0 when up)."
            )
            offline.add_metric([], 0.0 if since is None else max(0.0, now - since))
            yield up
            yield offline

    def _store_gauges(self, now: float) -> list[Metric]:
        store = self.store
        if store is None:
            return []
        depth = GaugeMetricFamily("outpost_hub_queue_depth", "Deliveries queued per endpoint.", labels=["endpoint"])
        age = GaugeMetricFamily(
            "outpost_hub_queue_oldest_age_seconds",
            "Age of the oldest queued message per endpoint.",
            labels=["endpoint"],
        )
        size = GaugeMetricFamily("outpost_hub_store_size_bytes", "Size of the message store's database file.")
        try:
            for endpoint in store.endpoints():
                depth.add_metric([endpoint], float(store.depth(endpoint)))
                oldest = store.oldest_enqueued(endpoint)
                age.add_metric([endpoint], 0.0 if oldest is None else max(0.0, now - oldest))
            size.add_metric([], float(store.size_bytes()))
        except OutpostError:
            return []
        return [depth, age, size]
