"""Reported metric series (extraction, buffering, retention) and server-side sessions, on real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.errors import StoreError
from outpost.fleet.adapters.console_store import SqlConsoleStore
from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.console import plots, views
from outpost.fleet.console.session import SessionRecord, alive, make_session, session_id
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.series import MAX_METRICS, Point, Recorder, numbers
from outpost.fleet.service import FleetService

DETECTOR = {
    "model": {"version": "3", "sha256": "ab"},
    "inference": {"count": 120, "latencyMsP50": 4.25, "latencyMsP99": None},
    "alerts": {"count": 2, "rate": 0.01},
    "lastInference": {"score": 0.73, "alert": False},
    "$version": 9,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SqlStore, SqlConsoleStore]]:
    fleet = SqlStore.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield fleet, SqlConsoleStore(fleet.engine)
    fleet.close()


def test_numbers_are_the_finite_numeric_leaves_of_module_reports() -> None:
    found = dict(numbers({"anomaly-detector": DETECTOR, "$edgeAgent": {"modules": {"m": {"restartCount": 3}}}}))
    assert found == {
        "anomaly-detector/inference.count": 120.0,
        "anomaly-detector/inference.latencyMsP50": 4.25,
        "anomaly-detector/alerts.count": 2.0,
        "anomaly-detector/alerts.rate": 0.01,
        "anomaly-detector/lastInference.score": 0.73,
    }  # booleans, nulls, strings, $version and the system modules' bookkeeping are not metrics
    assert numbers({"m": {"x": float("nan"), "y": float("inf"), "z": 10**400}, "n": "text"}) == []
    flood = {"m": {f"k{i}": i for i in range(1000)}}
    assert len(numbers(flood)) == MAX_METRICS
    assert numbers({"m": {"a" * 300: 1}}) == []  # over-long names are dropped


def test_a_report_is_buffered_and_written_in_one_batch_with_retention(
    store: tuple[SqlStore, SqlConsoleStore],
) -> None:
    fleet, console = store
    clock = Clock()
    recorder = Recorder(console, keep=8, max_age_s=3600, clock=clock)
    service = FleetService(fleet)
    service.on_report = recorder.record
    operator = Principal(Kind.OPERATOR, "admin")
    service.add_device(operator, "gw-1", {})
    device = Principal(Kind.DEVICE, "gw-1")
    for i in range(20):
        clock.now += 10
        service.report_modules(device, "gw-1", {"anomaly-detector": {"lastInference": {"score": i / 10}}})
    assert console.series("gw-1", 0) == {}  # nothing written on the report path
    assert recorder.flush() == 20
    kept = console.series("gw-1", 0)["anomaly-detector/lastInference.score"]
    assert 8 <= len(kept) < 8 + 8 // 4 + 1  # trimmed to the newest `keep` (a quarter may wait for the next trim)
    assert kept[-1] == (clock.now, 1.9)
    assert [at for at, _ in kept] == sorted(at for at, _ in kept)
    clock.now += 7200
    recorder.record("gw-1", {"m": {"x": 1}})
    recorder.flush()  # the age sweep: points older than max_age_s go
    assert console.series("gw-1", 0) == {"m/x": [(clock.now, 1.0)]}


def test_a_store_outage_keeps_the_buffer_and_bounds_it() -> None:
    class Down:
        def add_points(self, _points: object) -> None:
            raise StoreError("down")

        def trim_series(self, *_args: object) -> None: ...
        def prune_points(self, _before: float) -> None: ...
        def series(self, _device_id: str, _since: float) -> dict[str, list[tuple[float, float]]]:
            return {}

    recorder = Recorder(Down(), buffer_max=3)
    recorder.record("d", {"m": {"a": 1, "b": 2}})
    assert recorder.flush() == 0
    recorder.record("d", {"m": {"c": 3, "d": 4}})  # would exceed the bound: dropped, counted
    assert recorder.dropped == 2
    assert len(recorder._buffer) == 2


def test_sessions_end_on_sign_out_expiry_and_idleness(store: tuple[SqlStore, SqlConsoleStore]) -> None:
    _, console = store
    cookie = make_session("admin", "hash", now=1000.0, max_age=600)
    key = session_id(cookie)
    assert cookie not in key
    console.add_session(key, SessionRecord("admin", 1000.0, 1600.0, 1000.0))
    record = console.session(key)
    assert alive(record, "admin", 1100.0, idle=300)
    assert not alive(record, "other", 1100.0, idle=300)
    assert not alive(record, "admin", 1301.0, idle=300)  # idle too long
    console.touch_session(key, 1300.0)
    assert alive(console.session(key), "admin", 1400.0, idle=300)
    assert not alive(console.session(key), "admin", 1600.0, idle=3000)  # expired
    console.prune_sessions(1599.0)
    assert console.session(key) is not None
    assert console.end_session(key)
    assert console.session(key) is None
    assert not alive(None, "admin", 1100.0)
    assert not console.end_session(key)
    console.add_session(key, SessionRecord("admin", 1000.0, 1600.0, 1000.0))
    console.prune_sessions(1601.0)
    assert console.session(key) is None


def test_plots_draw_device_text_as_text() -> None:
    svg = plots.metrics_svg({"m/$x$<b>": [(1e9, 1.0)], "m/alerts.count": [(1e9, 1.0), (1e9 + 60, 2.0)]}, "d")
    assert b"&lt;b&gt;" in svg
    assert b"<b>" not in svg
    assert plots.ordered(["z", "m/latency", "m/alerts", "m/score"]) == ["m/score", "m/alerts", "m/latency", "z"]
    assert b"no device reported" in plots.latency_svg([], [], title="r")
    assert b"treatment (3)" in plots.latency_svg([1.0, 2.0, 3.0], [1.0, 1.5], title="r")
    summary = views.metric_summary({"m/x": [(0.0, 1.0), (60.0, 2.5)]})
    assert summary == [{"name": "m/x", "last": 2.5, "at": "1970-01-01 00:01:00", "points": 2}]
    assert Point("d", "m", 0.0, 1.0).value == 1.0
