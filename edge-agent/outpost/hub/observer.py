"""What ``outpost watch`` shows about the messages on a device's broker: pure, fed one message at a time.

The CLI subscribes to the topics of :func:`subscriptions` (module outputs, leaf telemetry, and
reported-property patches) with a client of its own and hands every message to
:meth:`Observer.observe`; :meth:`Observer.snapshot` is the view model: per-source message rates
over a sliding window and totals, the latest anomaly score, the last alerts and the valve state.

Read off the messages of the reference application (``docs/reference-app.md``), but by shape
rather than by module name, so renamed modules still show up:

- any JSON object with a numeric ``score`` is a score (anomaly-detector ``alerts``); a
  reported-properties patch with ``lastInference.score`` too (the detector reports it every 10 s,
  so the score is current even while nothing alerts);
- a message on an output named ``alerts``, or a JSON object with ``"alert": true``, is an alert;
- a JSON object with a string ``valve`` is the valve state (alert-actuator ``state``, and its
  reported properties).

Messages the SDK re-sends (same ``$.mid``) are counted once, as duplicates. No I/O, no threads:
the caller serialises calls and passes the clock.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from outpost.wire import batch as batches
from outpost.wire import topics

__all__ = ["Alert", "Observer", "Score", "SlidingRate", "Snapshot", "SourceStats", "Valve", "subscriptions"]

#: Bodies larger than this are counted but not parsed for scores, alerts or valve states.
MAX_PARSED_BYTES = 1 << 20
#: The shortest span a rate is divided by, so the first message does not read as a huge rate.
MIN_SPAN_SECS = 0.5


def subscriptions(device: str) -> list[str]:
    """The topic filters an observer of ``device`` subscribes to."""
    return [
        topics.all_outputs(device),
        topics.batch_outputs(device, "+"),
        topics.all_leaf_events(),
        topics.reported(device, "+"),
    ]


class SlidingRate:
    """Events per second over the last ``window`` seconds (exact: one timestamp per event)."""

    def __init__(self, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._times: deque[float] = deque()

    def add(self, at: float) -> None:
        self._times.append(at)
        self._prune(at)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        while self._times and self._times[0] <= cutoff:
            self._times.popleft()

    def count(self, now: float) -> int:
        """Events in ``(now - window, now]``."""
        self._prune(now)
        return sum(1 for t in self._times if t <= now)

    def rate(self, now: float, since: float | None = None) -> float:
        """``count / window``; while less than a window has passed since ``since``, over that span."""
        span = self.window if since is None else min(self.window, max(now - since, MIN_SPAN_SECS))
        return self.count(now) / span


@dataclass(frozen=True)
class SourceStats:
    source: str  # "MODULE/OUTPUT", or "device:ID" for a leaf device's telemetry
    device: str
    module: str | None
    output: str | None
    per_second: float
    total: int
    last_at: float


@dataclass(frozen=True)
class Score:
    value: float
    source: str
    at: float
    alert: bool | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Alert:
    at: float
    source: str
    score: float | None = None
    fault: str | None = None
    device: str | None = None  # the body's deviceID (the motor), not the edge device


@dataclass(frozen=True)
class Valve:
    state: str
    source: str
    at: float
    open: bool | None = None
    reason: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Snapshot:
    device_id: str
    since: float
    now: float
    window: float
    sources: tuple[SourceStats, ...]
    total: int
    per_second: float
    duplicates: int
    score: Score | None
    alerts: tuple[Alert, ...]  # newest first
    valve: Valve | None

    @property
    def observed_secs(self) -> float:
        return max(0.0, self.now - self.since)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase like the rest of Outpost's documents."""

        def camel(obj: Any) -> dict[str, Any] | None:
            if obj is None:
                return None
            out: dict[str, Any] = {}
            for key, value in asdict(obj).items():
                head, *rest = key.split("_")
                out[head + "".join(p.title() for p in rest)] = round(value, 4) if isinstance(value, float) else value
            return out

        return {
            "deviceId": self.device_id,
            "observedSecs": round(self.observed_secs, 3),
            "windowSecs": self.window,
            "totals": {"messages": self.total, "perSecond": round(self.per_second, 4), "duplicates": self.duplicates},
            "sources": [camel(s) for s in self.sources],
            "score": camel(self.score),
            "alerts": [camel(a) for a in self.alerts],
            "valve": camel(self.valve),
        }


@dataclass
class _Source:
    device: str
    module: str | None
    output: str | None
    rate: SlidingRate
    total: int = 0
    last_at: float = 0.0


class Observer:
    """Feed with :meth:`observe` (one call per MQTT message), read with :meth:`snapshot`. Not thread-safe."""

    def __init__(
        self,
        device_id: str,
        *,
        window: float = 5.0,
        clock: Callable[[], float] = time.time,
        keep_alerts: int = 5,
        remember_ids: int = 10_000,
    ) -> None:
        self.device_id = device_id
        self.window = window
        self.clock = clock
        self.since = clock()
        self.duplicates = 0
        self._sources: dict[str, _Source] = {}
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_ids
        self._alerts: deque[Alert] = deque(maxlen=keep_alerts)
        self._score: Score | None = None
        self._valve: Valve | None = None

    def restart(self, at: float | None = None) -> None:
        """Start the observation (and the rates' span) now, e.g. once the subscription is in place."""
        self.since = self.clock() if at is None else at

    def observe(
        self,
        topic: str,
        payload: bytes,
        user_properties: Sequence[tuple[str, str]] = (),
        *,
        at: float | None = None,
    ) -> None:
        """Take one message (``at``: when it arrived; default now). Topics of no interest are ignored."""
        when = self.clock() if at is None else at
        match topics.parse(topic):
            case topics.ModuleTopic(device, module, topics.ModuleChannel.REPORTED) if device == self.device_id:
                body = _json_object(payload)
                if body is not None:
                    self._read_reported(module, body, when)
            case topics.ModuleOutput(device, module, output):
                self._observe_output(device, module, output, pairs=user_properties, payload=payload, when=when)
            case topics.LeafEvents(device, properties):
                pairs = (*properties, *user_properties)
                self._observe_output(device, None, None, pairs=pairs, payload=payload, when=when)
            case topics.BatchOutputs(device, module) if device == self.device_id:
                try:
                    items = batches.decode(payload)
                except batches.BatchError:
                    return  # the hub drops and counts it too; nothing of it was delivered
                for item in items:
                    self._observe_output(
                        device, module, item.name, pairs=item.user_properties, payload=item.body, when=when
                    )

    def _observe_output(
        self,
        device: str,
        module: str | None,
        output: str | None,
        *,
        pairs: Sequence[tuple[str, str]],
        payload: bytes,
        when: float,
    ) -> None:
        if self._seen(dict(pairs).get("$.mid")):
            self.duplicates += 1
            return
        label = f"{module}/{output}" if module is not None else f"device:{device}"
        source = self._sources.get(label)
        if source is None:
            source = self._sources[label] = _Source(device, module, output, SlidingRate(self.window))
        source.rate.add(when)
        source.total += 1
        source.last_at = when
        body = _json_object(payload)
        if body is not None:
            self._read_body(label, output, body, when)

    def _seen(self, message_id: str | None) -> bool:
        if not message_id:
            return False
        if message_id in self._ids:
            return True
        self._ids[message_id] = None
        if len(self._ids) > self._remember:
            self._ids.popitem(last=False)
        return False

    def _read_body(self, label: str, output: str | None, body: Mapping[str, Any], at: float) -> None:
        score = _number(body.get("score"))
        if score is not None:
            alert = body.get("alert")
            self._score = Score(
                value=score,
                source=label,
                at=at,
                alert=alert if isinstance(alert, bool) else None,
                threshold=_number(body.get("threshold")),
            )
        if output == "alerts" or body.get("alert") is True:
            self._alerts.appendleft(
                Alert(
                    at=at, source=label, score=score, fault=_text(body.get("fault")), device=_text(body.get("deviceID"))
                )
            )
        self._read_valve(label, body, at)

    def _read_reported(self, module: str, patch: Mapping[str, Any], at: float) -> None:
        label = f"{module} (reported)"
        last = patch.get("lastInference")
        if isinstance(last, Mapping):
            score = _number(last.get("score"))
            if score is not None:
                alert = last.get("alert")
                self._score = Score(
                    value=score,
                    source=label,
                    at=at,
                    alert=alert if isinstance(alert, bool) else None,
                    threshold=_number(patch.get("threshold")),
                )
        self._read_valve(label, patch, at)

    def _read_valve(self, label: str, body: Mapping[str, Any], at: float) -> None:
        state = body.get("valve")
        if not isinstance(state, str):
            return
        is_open = body.get("open")
        self._valve = Valve(
            state=state,
            source=label,
            at=at,
            open=is_open if isinstance(is_open, bool) else state == "open",
            reason=_text(body.get("reason")),
            mode=_text(body.get("mode")),
        )

    def snapshot(self, now: float | None = None) -> Snapshot:
        when = self.clock() if now is None else now
        stats = tuple(
            SourceStats(
                source=label,
                device=s.device,
                module=s.module,
                output=s.output,
                per_second=s.rate.rate(when, self.since),
                total=s.total,
                last_at=s.last_at,
            )
            for label, s in sorted(self._sources.items())
        )
        return Snapshot(
            device_id=self.device_id,
            since=self.since,
            now=when,
            window=self.window,
            sources=stats,
            total=sum(s.total for s in stats),
            per_second=sum(s.per_second for s in stats),
            duplicates=self.duplicates,
            score=self._score,
            alerts=tuple(self._alerts),
            valve=self._valve,
        )


def _json_object(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > MAX_PARSED_BYTES or payload.lstrip()[:1] != b"{":
        return None
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
