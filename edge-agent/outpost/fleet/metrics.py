"""Prometheus metrics of one fleet process, in a registry of its own (tests run several in one process).

Served at ``/metrics`` (operator token) by the HTTP adapter, which also feeds the request metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FleetMetrics"]


class FleetMetrics:
    """Requests by route and status, their latency, waiting long-polls, wake-ups, refusals, GC pauses."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "outpost_fleet_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "outpost_fleet_request_seconds",
            "Time to answer a request (long-polls excluded), by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.waiting = Gauge(
            "outpost_fleet_longpolls_waiting", "Devices holding a long-poll on this process.", registry=self.registry
        )
        self.wakeups = Counter(
            "outpost_fleet_longpoll_wakeups", "Long-polls woken by a change, by whether the ETag moved.",
            ["changed"], registry=self.registry,
        )  # fmt: skip
        self.refusals = Counter(
            "outpost_fleet_refusals", "Requests refused, by reason (HTTP status).", ["status"], registry=self.registry
        )
        self.gc_pause = Histogram(
            "outpost_fleet_gc_pause_seconds", "Garbage-collector pauses of this process, by generation.",
            ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )  # fmt: skip
        self.feed_seconds = Histogram(
            "outpost_fleet_change_feed_seconds", "Time of one read of the change feed.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5), registry=self.registry,
        )  # fmt: skip
        self.count_seconds = Histogram(
            "outpost_fleet_count_seconds", "Time to bring the status counts up to the change feed (after a change).",
            buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry,
        )  # fmt: skip
