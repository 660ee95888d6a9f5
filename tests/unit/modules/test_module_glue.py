"""The four modules' ``main()`` (the thin SDK glue) against an in-memory stand-in for ``ModuleClient``,
chained sensor -> fft -> detector -> actuator as the manifest's routes do. The real SDK over a real
broker is the integration tests' job; this checks the glue's calls and message flow without one."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sdk = pytest.importorskip("outpost.sdk")


class FakeClient:
    """Records what a module does with its client; ``deliver`` plays the hub delivering an input."""

    def __init__(self, desired: dict[str, Any]) -> None:
        self.desired = desired
        self.sent: list[tuple[str, Any, dict[str, str] | None]] = []
        self.reported: list[dict[str, Any]] = []
        self.inputs: dict[str, Callable[[Any], None]] = {}
        self.methods: dict[str, Callable[[Any], tuple[int, Any]]] = {}
        self.desired_handlers: list[Callable[[dict[str, Any]], None]] = []
        self.connected = False
        self.closed = False
        self._count = 0

    def connect(self, _timeout: float = 10.0) -> None:
        self.connected = True

    def close(self, _timeout: float = 5.0) -> None:
        self.closed = True

    def send(self, output: str, payload: Any, properties: dict[str, str] | None = None) -> str:
        self.sent.append((output, payload, properties))
        return f"m{len(self.sent)}"

    def on_input(self, name: str, handler: Callable[[Any], None]) -> None:
        self.inputs[name] = handler

    def on_method(self, name: str, handler: Callable[[Any], tuple[int, Any]]) -> None:
        self.methods[name] = handler

    def on_desired_change(self, handler: Callable[[dict[str, Any]], None]) -> None:
        self.desired_handlers.append(handler)

    def twin(self, _timeout: float = 5.0) -> dict[str, Any]:
        return dict(self.desired)

    def report(self, patch: dict[str, Any]) -> None:
        self.reported.append(dict(patch))

    def deliver(self, input_name: str, body: Any, properties: dict[str, str] | None = None) -> None:
        import json

        self._count += 1
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        message = sdk.InputMessage(id=f"in{self._count}", input_name=input_name, body=raw, properties=properties or {})
        self.inputs[input_name](message)

    def outputs(self, name: str) -> list[Any]:
        return [payload for output, payload, _ in self.sent if output == name]

    def sent_on(self, name: str) -> list[tuple[Any, dict[str, str]]]:
        """(payload, application properties) of each message sent on output ``name``."""
        return [(payload, dict(props or {})) for output, payload, props in self.sent if output == name]


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def run_main(
    main: Callable[[], int], client: FakeClient, monkeypatch: pytest.MonkeyPatch, drive: Callable[[], None]
) -> int:
    """Run ``main()`` here (it installs signal handlers); ``drive`` runs on a thread once the module has
    registered itself, then SIGTERM stops the module as the agent would."""
    monkeypatch.setattr(sdk.ModuleClient, "from_environment", classmethod(lambda _cls, *_a, **_k: client))
    failures: list[BaseException] = []

    def driver() -> None:
        try:
            deadline = time.monotonic() + 10
            while not client.reported and time.monotonic() < deadline:
                time.sleep(0.01)
            drive()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=driver)
    thread.start()
    code = main()
    thread.join()
    if failures:
        raise failures[0]
    assert client.closed
    return code


@pytest.mark.usefixtures("restore_signals")
def test_the_four_modules_chained_with_a_stall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from alert_actuator.main import main as actuator_main
    from anomaly_detector.main import main as detector_main
    from fft_filter.main import main as fft_main
    from motor_sensor.main import main as sensor_main

    monkeypatch.setenv("MOTOR_ID", "motor-1")
    monkeypatch.setenv("OUTPOST_HEARTBEAT_FILE", str(tmp_path / "heartbeat"))
    monkeypatch.setenv("OUTPOST_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OUTPOST_EDGETPU", "off")

    # motor-sensor: a stalled motor, 50 windows/s, until 6 windows are out.
    sensor = FakeClient({"windowsPerSecond": 50, "windowSize": 1024, "sampleRateHz": 8000, "faults": ["stall"]})

    def wait_for_windows() -> None:
        while len(sensor.outputs("raw")) < 6:
            time.sleep(0.01)

    began = time.time()
    assert run_main(sensor_main, sensor, monkeypatch, wait_for_windows) == 0
    raws = sensor.outputs("raw")
    # Each window carries the moment it was sent (sourceTimestamp, epoch seconds) as a property.
    stamps = [props["sourceTimestamp"] for _, props in sensor.sent_on("raw")]
    assert began <= float(stamps[0]) < float(stamps[-1]) <= time.time()
    assert all(float(stamp) >= raw["timestamp"] - 0.001 for stamp, raw in zip(stamps, raws, strict=True))
    assert raws[0]["deviceID"] == "motor-1"
    assert raws[0]["fault"] == "stall"
    assert sensor.reported[0]["faults"][0]["type"] == "stall"

    # fft-filter: every raw window becomes a features message; a bad one is skipped.
    fft = FakeClient({"windowSize": 1024, "sampleRateHz": 8000, "window": "hann", "peaks": 5})

    def feed_raw() -> None:
        fft.deliver("raw", b"not json")
        for raw, props in sensor.sent_on("raw"):
            fft.deliver("raw", raw, props)
        fft.deliver("raw", {**raws[0], "sequence": 99})  # a leaf device's window: no sourceTimestamp

    assert run_main(fft_main, fft, monkeypatch, feed_raw) == 0
    features = fft.outputs("features")[: len(raws)]
    assert len(fft.outputs("features")) == len(raws) + 1
    # The features carry their window's sourceTimestamp on; the leaf's carry none.
    assert [props.get("sourceTimestamp") for _, props in fft.sent_on("features")] == [*stamps, None]
    assert {"deviceID", "current", "temperature", "vibration", "sound", "fft_data"} <= set(features[0])

    # anomaly-detector: the stalled motor's features alert.
    model = {"version": "1", "path": "/var/lib/outpost/models/x.tflite"}
    detector = FakeClient({"threshold": 0.8, "publishInferences": True, "model": model})

    def feed_features() -> None:
        for f, props in fft.sent_on("features")[: len(raws)]:
            detector.deliver("features", f, props)
        assert (tmp_path / "heartbeat").exists()  # the main loop beats while a model serves

    assert run_main(detector_main, detector, monkeypatch, feed_features) == 0
    alerts = detector.outputs("alerts")
    assert len(alerts) == len(features)
    assert alerts[0]["score"] > 0.8
    assert alerts[0]["model"]["version"] == "1"
    # Alerts and inference results carry the window's sourceTimestamp on (alerts also alertType).
    assert [props for _, props in detector.sent_on("alerts")] == [
        {"alertType": "anomaly", "sourceTimestamp": stamp} for stamp in stamps
    ]
    results = detector.sent_on("inference")
    assert [props for _, props in results] == [{"sourceTimestamp": stamp} for stamp in stamps]
    assert [r["sequence"] for r, _ in results] == [a["sequence"] for a in alerts]
    assert all(r["alert"] is True and r["score"] > 0.8 for r, _ in results)
    last = detector.reported[-1]
    assert last["inference"]["count"] == len(features)
    assert last["alerts"]["count"] == len(features)

    # alert-actuator: the first alert opens the valve; setValve closes it.
    actuator = FakeClient({"debounceSecs": 5})
    answers: list[tuple[int, Any]] = []

    def feed_alerts() -> None:
        for alert in alerts:
            actuator.deliver("alerts", alert)
        answers.append(actuator.methods["setValve"]({"open": False, "holdSecs": 60}))
        answers.append(actuator.methods["setValve"]({"open": "maybe"}))

    assert run_main(actuator_main, actuator, monkeypatch, feed_alerts) == 0
    states = actuator.outputs("state")
    assert [(s["valve"], s["reason"]) for s in states] == [("open", "alert"), ("closed", "manual")]
    assert states[0]["trigger"]["deviceID"] == "motor-1"
    assert answers[0][0] == 200
    assert answers[0][1]["valve"] == "closed"
    assert answers[1][0] == 400
