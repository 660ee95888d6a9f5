"""``outpost watch --once`` against a real hub (Mosquitto + router) and SDK modules.

The watcher subscribes beside the hub with a throwaway session; the hub must still receive, route
and deliver every message exactly as without it. Its hub panel scrapes the hub's real metrics
endpoint (an upstream sink that can be switched off stands for the cloud link).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from integration.agent_harness import manifest, module
from integration.conftest_mosquitto import free_port, wait_for
from integration.hub_harness import ALPHA_TO_BETA, DEVICE, OUTPOST, Counter, hub_manifest
from outpost.agent.adapters.process_runtime import ProcessRuntime
from outpost.hub.service import HubService, HubSettings
from outpost.hub.sinks import FailureKind, SinkResult
from outpost.hub.store import Stored

MODULES = ("alpha", "beta", "anomaly-detector", "alert-actuator")


def start_watch(tmp_path: Path, port: int, *extra: str, metrics: str | None = None) -> subprocess.Popen[str]:
    """``outpost watch --once`` with no agent state; returns once it is subscribed. Without
    ``metrics`` the hub panel reads a closed port (the test hubs serve no metrics by default)."""
    metrics = metrics or f"http://127.0.0.1:{free_port()}/metrics"
    proc = subprocess.Popen(
        [OUTPOST, "watch", "--once", "--state-dir", str(tmp_path / "no-agent"),
         "--hub-state-dir", str(tmp_path / "hub"), "--hub-port", str(port), "--device-id", DEVICE,
         "--hub-metrics", metrics, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith("watching"):
        proc.kill()
        out, rest = proc.communicate()
        raise AssertionError(f"outpost watch did not start: {first}{rest}{out}")
    return proc


def finish(proc: subprocess.Popen[str]) -> str:
    out, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    return out


def test_watch_once_json_sees_rates_score_alerts_and_valve(tmp_path, hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA, modules=MODULES))
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha, detector, actuator = (module_factory(hub, name) for name in ("alpha", "anomaly-detector", "alert-actuator"))
    for client in (alpha, detector, actuator):
        client.connect()

    proc = start_watch(tmp_path, hub.settings.port, "--json", "--seconds", "2")
    started = time.monotonic()
    for n in range(20):  # 20 messages in ~1 s, well inside the 2 s observed
        alpha.send("out", {"n": n})
        time.sleep(0.05)
    alert = {"deviceID": "motor-1", "alert": True, "score": 0.9961, "threshold": 0.8, "fault": "stall"}
    detector.send("alerts", alert, properties={"alertType": "anomaly"})
    actuator.send("state", {"deviceID": "motor-1", "valve": "open", "open": True, "reason": "alert", "mode": "auto"})
    for client in (alpha, detector, actuator):
        client.flush(timeout=10)
    assert time.monotonic() - started < 1.8, "the test sent too slowly for a 2 s observation"
    snap = json.loads(finish(proc))

    assert snap["deviceId"] == DEVICE
    assert snap["hub"] == f"127.0.0.1:{hub.settings.port}"
    assert snap["modules"] == []
    assert "outpost agent apply" in snap["agent"]["problem"]
    by = {s["source"]: s for s in snap["sources"]}
    assert set(by) == {"alpha/out", "anomaly-detector/alerts", "alert-actuator/state"}
    assert by["alpha/out"]["total"] == 20
    assert 7.0 <= by["alpha/out"]["perSecond"] <= 11.0  # 20 messages over a ~2 s observation
    assert (by["alpha/out"]["module"], by["alpha/out"]["output"], by["alpha/out"]["device"]) == ("alpha", "out", DEVICE)
    assert snap["totals"]["messages"] == 22
    assert snap["totals"]["duplicates"] == 0
    assert snap["totals"]["perSecond"] > 7.0
    assert snap["score"]["value"] == 0.9961
    assert snap["score"]["source"] == "anomaly-detector/alerts"
    assert [(a["source"], a["score"], a["fault"]) for a in snap["alerts"]] == [
        ("anomaly-detector/alerts", 0.9961, "stall")
    ]
    assert (snap["valve"]["state"], snap["valve"]["reason"]) == ("open", "alert")
    assert snap["hubMetrics"]["available"] is False  # no metrics there: said, and the rest is all here
    assert "connection refused" in snap["hubMetrics"]["error"]

    # The hub was not disturbed: everything routed was delivered once, in order, and drained.
    wait_for(lambda: got.count() >= 20, timeout=30, what="20 messages at beta")
    assert [b["n"] for b in got.bodies] == list(range(20))
    assert hub.store is not None
    wait_for(lambda: hub.store.depth("module:beta/in") == 0, timeout=10, what="beta's queue drained")


def test_watch_once_plain_shows_reported_score(tmp_path, hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA, modules=MODULES))
    alpha, detector = module_factory(hub, "alpha"), module_factory(hub, "anomaly-detector")
    alpha.connect()
    detector.connect()
    proc = start_watch(tmp_path, hub.settings.port, "--seconds", "1")
    alpha.send("out", {"n": 1})
    detector.report({"threshold": 0.8, "lastInference": {"score": 0.0312, "alert": False}})
    alpha.flush(timeout=10)
    text = finish(proc)
    assert "alpha/out" in text
    assert "anomaly score: 0.0312" in text
    assert "anomaly-detector (reported)" in text
    assert "valve: -" in text
    assert "outpost agent apply" in text
    assert "hub metrics unavailable at http://127.0.0.1:" in text


def test_watch_takes_device_and_hub_from_the_agent_and_lists_its_modules(tmp_path, hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA, modules=MODULES))
    port = hub.settings.port
    state = tmp_path / "agent"
    doc = manifest({"app": module(env={"BEHAVE_NAME": "app"})}, window=0.3)
    (tmp_path / "m.json").write_text(json.dumps(doc))
    ns = f"watch{uuid.uuid4().hex[:6]}"
    apply = [OUTPOST, "agent", "apply", str(tmp_path / "m.json"), "--state-dir", str(state), "--runtime", "process",
             "--namespace", ns, "--device-id", DEVICE, "--hub", f"127.0.0.1:{port}"]  # fmt: skip
    try:
        done = subprocess.run(apply, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        alpha = module_factory(hub, "alpha")
        alpha.connect()
        watch = [OUTPOST, "watch", "--once", "--json", "--seconds", "1", "--state-dir", str(state),
                 "--hub-state-dir", str(tmp_path / "hub")]  # fmt: skip
        proc = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(f"watching {DEVICE} on 127.0.0.1:{port}")
        alpha.send("out", {"n": 1})
        alpha.flush(timeout=10)
        snap = json.loads(finish(proc))
        assert snap["agent"]["problem"] is None
        modules = {m["name"]: m for m in snap["modules"]}
        assert modules["app"]["runtimeStatus"] == "running"
        assert modules["app"]["restartCount"] == 0
        assert [(s["source"], s["total"]) for s in snap["sources"]] == [("alpha/out", 1)]
    finally:
        runtime = ProcessRuntime(state, ns)
        for name, module_state in runtime.observe().modules.items():
            runtime.remove(name, module_state.id)


class Switch:
    """An upstream sink that is down (every send retryable) until switched on; records what it got."""

    name = "switch"

    def __init__(self) -> None:
        self.down = True
        self.delivered: list[Stored] = []
        self.lock = threading.Lock()

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        with self.lock:
            if self.down:
                return SinkResult(retryable=[s.seq for s in batch], failure=FailureKind.UNREACHABLE, detail="down")
            self.delivered.extend(batch)
            return SinkResult(succeeded=[s.seq for s in batch])

    def connected(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass


@pytest.fixture
def run_hub(mosquitto_installed: None) -> Iterator[Callable[[HubService, dict[str, Any]], HubService]]:
    """Starts a hub and runs ``HubService.run`` (which reports the upstream link to the metrics) on a
    thread, as ``outpost hub run`` does, until the test ends; then stops it."""
    stop = threading.Event()
    started: list[tuple[HubService, threading.Thread]] = []

    def run(hub: HubService, document: dict[str, Any]) -> HubService:
        hub.start(document)
        thread = threading.Thread(target=hub.run, args=(stop,), daemon=True)
        thread.start()
        started.append((hub, thread))
        return hub

    yield run
    stop.set()
    for hub, thread in started:
        thread.join(timeout=10)
        hub.stop()


def _gauge(hub: HubService, name: str) -> float | None:
    return hub.metrics.registry.get_sample_value(name)


def test_watch_hub_panel_shows_the_upstream_queue_offline_then_delivered(tmp_path, module_factory, run_hub):
    sink = Switch()
    routes = {**ALPHA_TO_BETA, "up": "FROM /messages/modules/alpha/outputs/out INTO $upstream"}
    metrics_port = free_port()
    settings = HubSettings(
        state_dir=tmp_path / "hub", device_id=DEVICE, port=free_port(), metrics_port=metrics_port, key_root=tmp_path,
        upstream=sink,
    )  # fmt: skip  # as hub_factory's, with the metrics endpoint on
    hub = run_hub(HubService(settings), hub_manifest(routes, modules=MODULES))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    for n in range(5):
        alpha.send("out", {"n": n})
    alpha.flush(timeout=10)
    wait_for(lambda: got.count() >= 5, timeout=30, what="5 messages at beta")
    assert hub.store is not None
    wait_for(lambda: hub.store.depth("upstream") == 5, timeout=30, what="5 messages queued upstream")
    wait_for(lambda: _gauge(hub, "outpost_hub_upstream_connected") == 0.0, timeout=30, what="upstream reported down")

    snap = json.loads(finish(start_watch(tmp_path, hub.settings.port, "--json", "--seconds", "1", metrics=url)))
    stats = snap["hubMetrics"]
    assert (stats["url"], stats["available"], stats["error"]) == (url, True, None)
    up = stats["upstream"]
    assert (up["connected"], up["queueDepth"], up["sent"]) == (False, 5, 0)
    assert up["offlineSecs"] > 0
    assert up["oldestAgeSecs"] >= 0
    assert up["sentPerSecond"] == 0.0  # two scrapes, one observation apart
    inputs = {q["endpoint"]: q for q in stats["inputs"]}
    assert (inputs["module:beta/in"]["depth"], inputs["module:beta/in"]["sent"]) == (0, 5)
    assert stats["dropped"] == {"expired": 0, "full": 0, "invalid": 0, "malformed": 0}
    assert stats["storeBytes"] > 0
    assert (snap["totals"]["messages"], snap["totals"]["perSecond"]) == (0, 0.0)  # the rest works as before

    sink.down = False  # the link is back: the queue drains, oldest first
    wait_for(lambda: len(sink.delivered) == 5, timeout=30, what="the upstream queue delivered")
    assert [json.loads(s.message.body)["n"] for s in sink.delivered] == list(range(5))
    wait_for(lambda: _gauge(hub, "outpost_hub_upstream_connected") == 1.0, timeout=30, what="upstream reported up")
    text = finish(start_watch(tmp_path, hub.settings.port, "--seconds", "1", metrics=url))
    assert "hub: upstream connected" in text
    assert "dropped: none" in text
    row = next(line for line in text.splitlines() if "$upstream" in line)
    assert [cell.strip() for cell in row.split("│")][1:5] == ["$upstream", "0", "-", "5"]  # QUEUED, OLDEST, SENT
    assert "beta/in" in text
