"""The hub's store-and-forward state for ``outpost watch``, read from its Prometheus text.

Pure: :func:`parse` turns one exposition (``outpost.hub.metrics.HubMetrics``, served on
127.0.0.1:OUTPOST_HUB_METRICS_PORT) into a :class:`HubStats` snapshot: the upstream link, the
upstream queue (depth, oldest age, sent), drops by reason, the store size and the module input
queues. :class:`HubMetricsView` keeps the last few scrapes to turn the upstream's sent counter
into a rate, and records why a scrape failed (the view then says so and carries on). The HTTP GET
is ``outpost.cli.adapters.metrics_scrape``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from outpost.hub.endpoint import UPSTREAM, Endpoint
from outpost.hub.metrics import DROP_REASONS

__all__ = ["DEFAULT_URL", "HubMetricsView", "HubStats", "MetricsError", "QueueStats", "parse"]

DEFAULT_URL = "http://127.0.0.1:9600/metrics"
PREFIX = "outpost_hub_"


class MetricsError(ValueError):
    """The text is not the hub's metrics (unreadable, or no ``outpost_hub_*`` sample in it)."""


@dataclass(frozen=True)
class QueueStats:
    """One store endpoint: deliveries queued, age of the oldest (None when none is queued), sent
    (acknowledged by the endpoint) and its rate (None until two scrapes are apart in time)."""

    endpoint: str
    depth: int = 0
    oldest_age_secs: float | None = None
    sent: int = 0
    per_second: float | None = None

    @property
    def label(self) -> str:
        """``$upstream``, or ``beta/in`` for ``module:beta/in``."""
        parsed = Endpoint.parse(self.endpoint)
        return parsed.label if parsed is not None else self.endpoint

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "depth": self.depth,
            "oldestAgeSecs": self.oldest_age_secs,
            "sent": self.sent,
            "perSecond": self.per_second,
        }


@dataclass(frozen=True)
class HubStats:
    """One scrape of the hub's metrics at ``at``, or why there is none (``error``)."""

    url: str
    at: float
    error: str | None = None
    upstream_connected: bool | None = None  # None: no upstream link reported (none configured, or just started)
    upstream_offline_secs: float | None = None
    upstream: QueueStats = QueueStats(UPSTREAM)
    dropped: tuple[tuple[str, int], ...] = ()
    rejected: int = 0
    store_bytes: int | None = None
    inputs: tuple[QueueStats, ...] = ()  # module input queues, by endpoint

    @property
    def available(self) -> bool:
        return self.error is None

    @property
    def dropped_total(self) -> int:
        return sum(n for _, n in self.dropped)

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"url": self.url, "available": False, "error": self.error}
        return {
            "url": self.url,
            "available": True,
            "error": None,
            "upstream": {
                "connected": self.upstream_connected,
                "offlineSecs": self.upstream_offline_secs,
                "queueDepth": self.upstream.depth,
                "oldestAgeSecs": self.upstream.oldest_age_secs,
                "sent": self.upstream.sent,
                "sentPerSecond": self.upstream.per_second,
            },
            "dropped": dict(self.dropped),
            "rejected": self.rejected,
            "storeBytes": self.store_bytes,
            "inputs": [q.as_dict() for q in self.inputs],
        }


def _count(value: float) -> int:
    return int(value) if math.isfinite(value) and value > 0 else 0


def _age(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def parse(text: str, *, url: str, at: float) -> HubStats:
    """The snapshot in ``text`` (Prometheus text format); :class:`MetricsError` if it is not the hub's."""
    depth: dict[str, int] = {}
    age: dict[str, float | None] = {}
    sent: dict[str, int] = {}
    dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
    connected: bool | None = None
    offline: float | None = None
    rejected = 0
    store: int | None = None
    seen = False
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on malformed lines
        raise MetricsError(f"unreadable Prometheus text: {exc or type(exc).__name__}") from exc
    for sample in samples:
        name, labels, value = sample.name, sample.labels, float(sample.value)
        if not name.startswith(PREFIX):
            continue
        seen = True
        metric = name.removeprefix(PREFIX)
        endpoint = labels.get("endpoint", "")
        if metric == "upstream_connected":
            connected = value >= 0.5
        elif metric == "upstream_offline_seconds":
            offline = _age(value)
        elif metric == "queue_depth" and endpoint:
            depth[endpoint] = _count(value)
        elif metric == "queue_oldest_age_seconds" and endpoint:
            age[endpoint] = _age(value)
        elif metric == "messages_out_total" and endpoint:
            sent[endpoint] = sent.get(endpoint, 0) + _count(value)
        elif metric == "dropped_total" and "reason" in labels:
            dropped[labels["reason"]] = _count(value)
        elif metric == "rejected_total":
            rejected = _count(value)
        elif metric == "store_size_bytes":
            store = _count(value)
    if not seen:
        raise MetricsError(f"no {PREFIX}* metrics there: is it the hub's metrics port?")

    def queue(endpoint: str) -> QueueStats:
        n = depth.get(endpoint, 0)  # the hub lists only endpoints with something queued
        return QueueStats(endpoint, n, age.get(endpoint) if n else None, sent.get(endpoint, 0))

    inputs = sorted(e for e in {*depth, *sent} if (p := Endpoint.parse(e)) is not None and not p.is_upstream)
    return HubStats(
        url=url,
        at=at,
        upstream_connected=connected,
        upstream_offline_secs=offline if connected is False else (0.0 if connected else None),
        upstream=queue(UPSTREAM),
        dropped=tuple(sorted(dropped.items())),
        rejected=rejected,
        store_bytes=store,
        inputs=tuple(queue(e) for e in inputs),
    )


class HubMetricsView:
    """Successive scrapes of one URL: the latest snapshot, with send rates over about ``window`` s."""

    def __init__(self, url: str, *, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError("the window must be positive")
        self.url = url
        self.window = window
        self._history: deque[tuple[float, dict[str, int]]] = deque()  # (at, sent per endpoint), oldest first
        self.latest: HubStats | None = None

    def update(self, text: str, at: float) -> HubStats:
        """Record one exposition read at ``at``; text that is not the hub's counts as a failed scrape."""
        try:
            stats = parse(text, url=self.url, at=at)
        except MetricsError as exc:
            return self.fail(str(exc), at)
        sent = {q.endpoint: q.sent for q in (stats.upstream, *stats.inputs)}
        if self._history:
            last_at, last = self._history[-1]
            if at < last_at or any(n < last.get(e, 0) for e, n in sent.items()):
                self._history.clear()  # the hub restarted (its counters did), or the clock went back
        self._history.append((at, sent))
        while len(self._history) > 2 and at - self._history[1][0] >= self.window:
            self._history.popleft()  # keep one scrape at or before the window's start
        first_at, first = self._history[0]
        if at > first_at:
            span = at - first_at

            def rated(q: QueueStats) -> QueueStats:
                return replace(q, per_second=max(0, q.sent - first.get(q.endpoint, 0)) / span)

            stats = replace(stats, upstream=rated(stats.upstream), inputs=tuple(rated(q) for q in stats.inputs))
        self.latest = stats
        return stats

    def fail(self, reason: str, at: float) -> HubStats:
        """Record a failed scrape: the snapshot says why; rates start over on the next success."""
        self._history.clear()
        self.latest = HubStats(url=self.url, at=at, error=reason)
        return self.latest
