"""``outpost watch``: the observer's view model (fake clock) and the command's error paths."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.cli import app
from outpost.hub.observer import Observer, SlidingRate, subscriptions

D = "dev1"
runner = CliRunner()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def out_topic(module: str, output: str) -> str:
    return f"devices/{D}/modules/{module}/outputs/{output}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def observer(clock: Clock) -> Observer:
    return Observer(D, window=5.0, clock=clock)


# --- sliding rate ---------------------------------------------------------------------------


def test_sliding_rate_counts_only_the_window():
    rate = SlidingRate(window=5.0)
    for i in range(10):
        rate.add(100.0 + i * 0.5)  # 100.0 .. 104.5: 10 events in 5 s
    assert rate.count(104.5) == 10
    assert rate.rate(104.5) == pytest.approx(2.0)
    assert rate.count(105.0) == 9  # 100.0 fell out: the window is (100.0, 105.0]
    assert rate.count(109.4) == 1
    assert rate.rate(120.0) == 0.0


def test_sliding_rate_over_a_short_observation_uses_the_elapsed_span():
    rate = SlidingRate(window=5.0)
    for i in range(20):
        rate.add(200.0 + i * 0.1)  # 10 msg/s for 2 s
    assert rate.rate(202.0, since=200.0) == pytest.approx(10.0)
    assert rate.rate(202.0) == pytest.approx(4.0)  # over the full window
    assert rate.rate(200.1, since=200.0) == pytest.approx(2 / 0.5)  # the span is at least 0.5 s


def test_sliding_rate_refuses_a_bad_window():
    with pytest.raises(ValueError, match="positive"):
        SlidingRate(window=0)


# --- observer ---------------------------------------------------------------------------------


def test_subscriptions_cover_outputs_leaf_telemetry_and_reported_properties():
    assert subscriptions(D) == [
        f"devices/{D}/modules/+/outputs/#",
        f"devices/{D}/modules/+/batch/outputs",
        "devices/+/messages/events/#",
        f"devices/{D}/modules/+/twin/reported",
    ]


def test_batched_outputs_count_like_single_ones(observer: Observer, clock: Clock):
    from outpost.wire import batch as batches

    items = [
        batches.Framed("features", (("$.mid", f"f{i}"),), "application/json", body({"temperature": 40}))
        for i in range(3)
    ]
    alert = batches.Framed("alerts", (("$.mid", "a1"),), None, body({"score": 0.97, "fault": "stall"}))
    observer.observe(f"devices/{D}/modules/fft-filter/batch/outputs", batches.encode(items), at=1000.0)
    observer.observe(f"devices/{D}/modules/detector/batch/outputs", batches.encode([alert, alert]), at=1000.5)
    observer.observe(f"devices/{D}/modules/detector/batch/outputs", b"OPB1 broken", at=1000.6)  # ignored
    snap = observer.snapshot(now=1001.0)
    by = {s.source: s.total for s in snap.sources}
    assert by == {"fft-filter/features": 3, "detector/alerts": 1}
    assert snap.duplicates == 1
    assert [a.fault for a in snap.alerts] == ["stall"]


def test_rates_and_totals_per_source(observer: Observer, clock: Clock):
    for i in range(20):  # fft-filter/features at 2 msg/s for 10 s
        clock.now = 1000.0 + i * 0.5
        observer.observe(out_topic("fft-filter", "features"), body({"temperature": 40}), [("$.mid", f"f{i}")])
    for i in range(5):  # a burst from motor-sensor in the last second
        observer.observe(out_topic("motor-sensor", "raw"), b"[1,2,3]", [("$.mid", f"r{i}")], at=1009.0 + i * 0.1)
    snap = observer.snapshot(now=1009.5)
    by = {s.source: s for s in snap.sources}
    assert set(by) == {"fft-filter/features", "motor-sensor/raw"}
    assert by["fft-filter/features"].total == 20
    assert by["fft-filter/features"].per_second == pytest.approx(2.0)  # 10 in (1004.5, 1009.5]
    assert by["fft-filter/features"].module == "fft-filter"
    assert by["fft-filter/features"].output == "features"
    assert by["fft-filter/features"].last_at == 1009.5
    assert by["motor-sensor/raw"].per_second == pytest.approx(1.0)  # 5 in the 5 s window
    assert snap.total == 25
    assert snap.per_second == pytest.approx(3.0)
    later = observer.snapshot(now=1100.0)
    assert later.per_second == 0.0
    assert later.total == 25  # totals stay


def test_rates_early_in_the_observation_are_over_the_elapsed_time(observer: Observer, clock: Clock):
    for i in range(4):
        observer.observe(out_topic("alpha", "out"), b"x", at=1000.0 + i * 0.25)
    assert observer.snapshot(now=1001.0).per_second == pytest.approx(4.0)


def test_resent_message_ids_count_once(observer: Observer):
    for _ in range(3):
        observer.observe(out_topic("alpha", "out"), b"{}", [("$.mid", "same")])
    observer.observe(out_topic("alpha", "out"), b"{}")  # no id: always counted
    snap = observer.snapshot()
    assert snap.total == 2
    assert snap.duplicates == 2


def test_leaf_telemetry_is_a_source_of_its_own_with_topic_properties(observer: Observer):
    topic = "devices/leaf-7/messages/events/%24.mid=m1&kind=t"
    observer.observe(topic, body({"temperature": 71.5}))
    observer.observe(topic, body({"temperature": 71.5}))  # same $.mid in the topic: a re-send
    snap = observer.snapshot()
    assert [(s.source, s.device, s.module, s.total) for s in snap.sources] == [("device:leaf-7", "leaf-7", None, 1)]
    assert snap.duplicates == 1


def test_other_topics_are_ignored(observer: Observer):
    observer.observe(f"devices/{D}/modules/alpha/inputs/in", b"{}")
    observer.observe(f"devices/{D}/modules/alpha/status", b"online")
    observer.observe("devices/other/modules/x/twin/reported", body({"valve": "open"}))
    snap = observer.snapshot()
    assert snap.total == 0
    assert snap.sources == ()
    assert snap.valve is None


def test_alerts_score_and_valve_from_the_reference_app(observer: Observer, clock: Clock):
    alert = {
        "deviceID": "motor-1", "alert": True, "score": 0.9961, "threshold": 0.8, "fault": "stall",
        "model": {"version": "1"}, "detectedAt": 1700000006.2, "sequence": 42,
    }  # fmt: skip
    clock.now = 1001.0
    observer.observe(out_topic("anomaly-detector", "alerts"), body(alert), [("alertType", "anomaly")])
    clock.now = 1002.0
    state = {"deviceID": "motor-1", "valve": "open", "open": True, "reason": "alert", "mode": "auto"}
    observer.observe(out_topic("alert-actuator", "state"), body(state))
    snap = observer.snapshot(now=1003.0)
    assert snap.score is not None
    assert (snap.score.value, snap.score.source, snap.score.alert, snap.score.threshold) == (
        0.9961,
        "anomaly-detector/alerts",
        True,
        0.8,
    )
    assert [(a.at, a.source, a.score, a.fault, a.device) for a in snap.alerts] == [
        (1001.0, "anomaly-detector/alerts", 0.9961, "stall", "motor-1")
    ]
    assert snap.valve is not None
    assert (snap.valve.state, snap.valve.open, snap.valve.reason, snap.valve.mode) == ("open", True, "alert", "auto")
    assert snap.valve.source == "alert-actuator/state"


def test_only_the_last_few_alerts_are_kept_newest_first(clock: Clock):
    observer = Observer(D, clock=clock, keep_alerts=3)
    for i in range(5):
        clock.now = 1000.0 + i
        observer.observe(out_topic("anomaly-detector", "alerts"), body({"alert": True, "score": (90 + i) / 100}))
    snap = observer.snapshot()
    assert [a.score for a in snap.alerts] == [0.94, 0.93, 0.92]
    assert snap.score is not None
    assert snap.score.value == 0.94


def test_an_alert_without_a_score_and_a_score_without_an_alert(observer: Observer):
    observer.observe(out_topic("x", "alerts"), body({"fault": "bearing_wear"}))
    observer.observe(out_topic("inference", "scores"), body({"score": 0.12, "alert": False}))
    observer.observe(out_topic("y", "out"), body({"score": True}))  # a bool is not a score
    snap = observer.snapshot()
    assert [(a.source, a.score, a.fault) for a in snap.alerts] == [("x/alerts", None, "bearing_wear")]
    assert snap.score is not None
    assert (snap.score.value, snap.score.source, snap.score.alert) == (0.12, "inference/scores", False)


def test_reported_properties_keep_score_and_valve_current(observer: Observer, clock: Clock):
    observer.observe(out_topic("anomaly-detector", "alerts"), body({"alert": True, "score": 0.99}))
    clock.now = 1010.0
    reported = {"threshold": 0.8, "lastInference": {"score": 0.03, "alert": False}, "inference": {"count": 9}}
    observer.observe(f"devices/{D}/modules/anomaly-detector/twin/reported", body(reported))
    observer.observe(f"devices/{D}/modules/alert-actuator/twin/reported", body({"valve": "closed", "mode": "auto"}))
    snap = observer.snapshot()
    assert snap.total == 1  # reported patches are not telemetry
    assert snap.score is not None
    assert (snap.score.value, snap.score.source, snap.score.threshold) == (0.03, "anomaly-detector (reported)", 0.8)
    assert len(snap.alerts) == 1
    assert snap.valve is not None
    assert (snap.valve.state, snap.valve.open, snap.valve.source) == ("closed", False, "alert-actuator (reported)")


def test_bodies_that_are_not_json_objects_are_counted_but_not_read(observer: Observer):
    for payload in (b"\xff\xfe", b"{not json", b"[1, 2]", b"", b'"score"'):
        observer.observe(out_topic("alpha", "out"), payload)
    snap = observer.snapshot()
    assert snap.total == 5
    assert (snap.score, snap.valve, snap.alerts) == (None, None, ())


def test_snapshot_as_json(observer: Observer, clock: Clock):
    observer.restart(at=1000.0)
    clock.now = 1001.0
    observer.observe(out_topic("anomaly-detector", "alerts"), body({"alert": True, "score": 0.95, "deviceID": "m"}))
    doc = observer.snapshot(now=1002.0).as_dict()
    json.dumps(doc)  # serialisable
    assert doc["deviceId"] == D
    assert doc["observedSecs"] == 2.0
    assert doc["windowSecs"] == 5.0
    assert doc["totals"] == {"messages": 1, "perSecond": 0.5, "duplicates": 0}
    assert doc["sources"] == [
        {"source": "anomaly-detector/alerts", "device": D, "module": "anomaly-detector", "output": "alerts",
         "perSecond": 0.5, "total": 1, "lastAt": 1001.0}
    ]  # fmt: skip
    assert doc["score"] == {"value": 0.95, "source": "anomaly-detector/alerts", "at": 1001.0, "alert": True,
                            "threshold": None}  # fmt: skip
    assert doc["alerts"] == [
        {"at": 1001.0, "source": "anomaly-detector/alerts", "score": 0.95, "fault": None, "device": "m"}
    ]
    assert doc["valve"] is None


# --- the command's errors -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_json_needs_once(tmp_path: Path):
    result = runner.invoke(app, ["watch", "--json", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "--json needs --once" in result.stderr


def test_missing_hub_password_says_where_to_look(tmp_path: Path):
    result = runner.invoke(
        app, ["watch", "--once", "--state-dir", str(tmp_path / "none"), "--hub-state-dir", str(tmp_path / "hub")]
    )
    assert result.exit_code == 1
    assert "hub.password" in result.stderr
    assert "--hub-state-dir" in result.stderr
    assert not (tmp_path / "hub").exists()  # watching never creates the hub's files


def test_unreachable_broker_asks_whether_the_hub_runs(tmp_path: Path):
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hub.password").write_text("secret\n")
    port = _closed_port()
    result = runner.invoke(
        app,
        [
            "watch",
            "--once",
            "--state-dir",
            str(tmp_path / "none"),
            "--hub-state-dir",
            str(hub),
            "--hub-port",
            str(port),
        ],
    )
    assert result.exit_code == 1
    assert "is the hub running?" in result.stderr
    assert f"outpost check --broker 127.0.0.1:{port}" in result.stderr


def test_bad_hub_address(tmp_path: Path):
    result = runner.invoke(app, ["watch", "--once", "--state-dir", str(tmp_path / "none"), "--hub", "nohost"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.stderr
