"""Reference application benchmark: sensor-to-alert latency of every sample window on the local device.

Run: ``scripts/bench reference`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_reference.py --json``).

The real modules run as processes (the agent's process runtime, as ``scripts/demo`` does without
Docker): ``outpost agent run`` applies ``manifests/motor-monitor.json`` on a free port of 127.0.0.1 and
starts the hub (``outpost hub run``, with its own Mosquitto) and motor-sensor -> fft-filter ->
anomaly-detector -> alert-actuator. Changes are made the way an operator makes them: the manifest
the agent watches is rewritten (desired properties of motor-sensor: ``windowsPerSecond``,
``faults``), and the agent, hub and module twins carry them to the sensor.

Every raw window carries ``sourceTimestamp`` (epoch seconds when motor-sensor handed it to its hub
client); fft-filter copies it onto the features, anomaly-detector onto its alerts and inference
results (``publishInferences`` is turned on here). A probe module in this process (``bench-probe``,
declared in the deployment with ``status: stopped`` so that the hub gives it credentials and the agent
leaves it alone) has routes from the same outputs the application routes: it receives a window's
``raw`` as fft-filter does, its ``features`` as anomaly-detector does and its ``alerts`` as
alert-actuator does (and ``inference``), and notes the arrival time of each. Per window:

- sensor -> fft: raw at the fft-filter input (the hub hop of a ~38 KB window);
- fft -> detector: raw at fft-filter -> features at the anomaly-detector input (FFT + one hop);
- detector -> actuator: features at the detector -> alert (or inference result) at the actuator
  input (inference + one hop);
- total: sent by motor-sensor -> alert (inference result) available at its consumer.

Scenarios: a healthy motor (inference results; no alerts) and a stalled one (an alert for every
window) at the design's 2 windows/s and at higher rates to show headroom, repeated; the tables give
the median over the repeats of each figure. The baseline, measured in the same run in this process
without the hub: the same chain's work for one window (JSON encode/decode of raw, features and alert,
FFT features, inference), which is what the modules would take if the hops cost nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from integration.conftest_mosquitto import free_port
from outpost.sdk import InputMessage, ModuleClient
from outpost.wire.credentials import device_key, module_password

REPO = Path(__file__).resolve().parents[2]
MODULES = ("motor-sensor", "fft-filter", "anomaly-detector", "alert-actuator")
DEVICE = "benchdev"
PROBE = "bench-probe"
PROBE_INPUTS = {
    "raw": "motor-sensor/outputs/raw",
    "features": "fft-filter/outputs/features",
    "inference": "anomaly-detector/outputs/inference",
    "alerts": "anomaly-detector/outputs/alerts",
}
SOURCE_TIMESTAMP = "sourceTimestamp"
DESIGN_RATE = 2.0


def _pct(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in ms of latencies in seconds (NaN when there are none)."""
    if not values:
        return {k: float("nan") for k in ("p50", "p95", "p99", "max")}
    arr = np.asarray(values) * 1e3
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max())}


# ---------------------------------------------------------------------------------------------------- baseline


def baseline(windows: int) -> dict[str, dict[str, float]]:
    """Per-window work of the chain in this process, no hub: a stalled motor so that every window alerts."""
    for name in MODULES:
        path = str(REPO / "modules" / name)
        if path not in sys.path:
            sys.path.insert(0, path)
    from anomaly_detector import BUNDLED_MODEL
    from anomaly_detector.detector import Detector
    from anomaly_detector.swap import ModelManager
    from fft_filter.service import FilterService
    from motor_sensor.service import SensorService

    sensor = SensorService("motor-1")
    sensor.apply_desired({"faults": ["stall"], "windowsPerSecond": DESIGN_RATE})
    fft = FilterService()
    manager = ModelManager(edgetpu="off")
    manager.load_file(BUNDLED_MODEL)
    detector = Detector(manager)

    def encode(payload: Any) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()  # what ModuleClient.send does

    stages: dict[str, list[float]] = {k: [] for k in ("fft", "detector", "chain", "compute")}
    alerts = 0
    for i in range(windows + 20):
        message = sensor.next_message(time.time())
        t0 = time.perf_counter()
        raw = json.loads(encode(message))
        c0 = time.perf_counter()
        features = fft.process(raw)
        c1 = time.perf_counter()
        assert features is not None
        body = json.loads(encode(features))
        t1 = time.perf_counter()
        c2 = time.perf_counter()
        outcome = detector.handle(body)
        c3 = time.perf_counter()
        assert outcome is not None
        if outcome.alert is not None:
            json.loads(encode(outcome.alert))
            alerts += i >= 20
        t2 = time.perf_counter()
        if i >= 20:  # warm-up
            stages["fft"].append(t1 - t0)
            stages["detector"].append(t2 - t1)
            stages["chain"].append(t2 - t0)
            stages["compute"].append((c1 - c0) + (c3 - c2))
    assert alerts == windows, f"baseline: {alerts} of {windows} stalled windows alerted"
    return {k: _pct(v) for k, v in stages.items()}


# ---------------------------------------------------------------------------------------------------- the device


@dataclass
class Arrivals:
    """What the probe received, by window (its ``sourceTimestamp``) and input: arrival times (epoch s)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_window: dict[float, dict[str, float]] = field(default_factory=dict)
    last_alert: float = 0.0
    duplicates: int = 0

    def __call__(self, message: InputMessage) -> None:
        now = time.time()
        stamp = message.properties.get(SOURCE_TIMESTAMP)
        if stamp is None:
            return
        with self.lock:
            seen = self.by_window.setdefault(float(stamp), {})
            if message.input_name in seen:
                self.duplicates += 1
                return
            seen[message.input_name] = now
            if message.input_name == "alerts":
                self.last_alert = now

    def between(self, t0: float, t1: float) -> dict[float, dict[str, float]]:
        with self.lock:
            return {ts: dict(seen) for ts, seen in self.by_window.items() if t0 <= ts < t1}

    def latest(self, input_name: str) -> tuple[float, float] | None:
        """(sourceTimestamp, arrival) of the newest window seen on ``input_name``."""
        with self.lock:
            stamps = [ts for ts, seen in self.by_window.items() if input_name in seen]
            if not stamps:
                return None
            ts = max(stamps)
            return ts, self.by_window[ts][input_name]


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


class Device:
    """The reference deployment on this machine: ``outpost agent run`` with the process runtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.namespace = f"bench{uuid.uuid4().hex[:6]}"
        self.state = root / "agent"
        self.manifest_path = root / "motor-monitor.json"
        self.document = self._document()
        self.agent: subprocess.Popen[bytes] | None = None
        self.probe: ModuleClient | None = None
        self.arrivals = Arrivals()

    def _document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((REPO / "manifests" / "motor-monitor.json").read_text())
        content = doc["modulesContent"]
        agent = content["$edgeAgent"]["properties.desired"]
        agent["systemModules"]["edgeHub"]["env"]["OUTPOST_HUB_METRICS_PORT"] = {"value": "0"}
        agent["outpost"]["rollback"]["healthWindowSecs"] = 3
        agent["modules"][PROBE] = {
            "version": "1.0",
            "type": "docker",
            "status": "stopped",  # this process connects as the probe; the agent runs nothing
            "restartPolicy": "never",
            "settings": {"image": f"outpost/{PROBE}:0.1.0", "createOptions": "{}"},
            "outpost": {"process": {"command": ["true"]}},
        }
        hub = content["$edgeHub"]["properties.desired"]
        hub.pop("outpost", None)  # no Kafka here: $upstream messages stay in the hub's store
        for input_name, source in PROBE_INPUTS.items():
            hub["routes"][f"bench_{input_name}"] = (
                f'FROM /messages/modules/{source} INTO BrokeredEndpoint("/modules/{PROBE}/inputs/{input_name}")'
            )
        content["anomaly-detector"]["properties.desired"]["publishInferences"] = True
        return doc

    def write_manifest(self, *, rate: float, fault: str | None) -> None:
        doc = copy.deepcopy(self.document)
        sensor = doc["modulesContent"]["motor-sensor"]["properties.desired"]
        sensor["windowsPerSecond"] = rate
        sensor["faults"] = [fault] if fault else []
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.manifest_path)

    def reported(self, module: str) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data: dict[str, Any] = json.loads((self.root / "hub" / "twins" / f"reported-{module}.json").read_text())
            return data
        return {}

    def start(self) -> None:
        self.write_manifest(rate=DESIGN_RATE, fault=None)
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"  # python3 -m <module> runs in this environment
        env.update(OUTPOST_MODELS_DIR=str(self.root / "models"), OUTPOST_EDGETPU="off")
        args = [
            str(Path(bindir) / "outpost"), "agent", "run", "--manifest", str(self.manifest_path),
            "--runtime", "process", "--state-dir", str(self.state), "--workdir", str(REPO),
            "--device-id", DEVICE, "--hub", f"127.0.0.1:{self.port}", "--namespace", self.namespace,
            "--interval", "1", "--metrics-port", "0",
        ]  # fmt: skip
        log = (self.root / "agent.log").open("ab")
        self.agent = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait((self.root / "device.key").exists, 60, "the device key")
        self.probe = _wait(self._connect_probe, 120, "the hub to accept the probe")
        _wait(lambda: self.arrivals.latest("inference"), 180, "the first inference result at the probe")
        _wait(lambda: self.reported("alert-actuator").get("valve"), 60, "alert-actuator reporting")

    def _connect_probe(self) -> ModuleClient | None:
        if self.agent is not None and self.agent.poll() is not None:
            raise RuntimeError(f"outpost agent exited ({self.agent.returncode}); see {self.root / 'agent.log'}")
        password = module_password(device_key(self.root), PROBE)
        probe = ModuleClient(device_id=DEVICE, module_id=PROBE, password=password, port=self.port)
        for input_name in PROBE_INPUTS:
            probe.on_input(input_name, self.arrivals)
        try:
            probe.connect(timeout=2)
        except Exception:  # the hub or its broker is not up yet, or has not given the probe credentials yet
            return None
        return probe

    def stop(self) -> None:
        """Agent first (or it would start the modules again), then every module, the hub (and its broker)."""
        if self.probe is not None:
            with contextlib.suppress(Exception):
                self.probe.close(timeout=2)
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        if (self.state / "runtime.json").exists():
            from outpost.agent.adapters import make_runtime

            runtime = make_runtime("process", state_dir=self.state, namespace=self.namespace, workdir=REPO)
            for name, module in sorted(runtime.observe().modules.items(), key=lambda m: m[0] == "edgeHub"):
                with contextlib.suppress(Exception):
                    runtime.remove(name, module.id)
        for pid in _leftovers(self.root, self.state):  # a safety net: nothing started here may outlive the bench
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _leftovers(root: Path, state: Path) -> list[int]:
    """Processes this bench started (their environment names our agent state dir, or their command our root)."""
    mine: list[int] = []
    marker_env = f"OUTPOST_AGENT_STATE_DIR={state.resolve()}".encode()
    marker_cmd = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker_cmd in (entry / "cmdline").read_bytes() or marker_env in (entry / "environ").read_bytes():
                mine.append(int(entry.name))
    return mine


# ---------------------------------------------------------------------------------------------------- scenarios


def run_scenario(device: Device, rate: float, fault: str | None, seconds: float) -> dict[str, Any]:
    arrivals = device.arrivals
    device.write_manifest(rate=rate, fault=fault)
    wanted = [fault] if fault else []

    def applied() -> bool:
        report = device.reported("motor-sensor")
        faults = [f.get("type") for f in report.get("faults", [])]
        return bool(report.get("windowsPerSecond") == rate and faults == wanted)

    _wait(applied, 60, f"motor-sensor at {rate:g} windows/s, faults {wanted}")
    time.sleep(3.0)
    if fault is None:  # a stalled motor is hot: wait until it has cooled down to a quiet detector
        _wait(lambda: time.time() - arrivals.last_alert > 3.0, 180, "the detector to stop alerting")

    def caught_up() -> bool:  # a backlog left by a faster scenario has drained
        latest = arrivals.latest("inference")
        return latest is not None and time.time() - latest[0] < 2.0 and latest[1] - latest[0] < 1.0

    _wait(caught_up, 180, "the chain to catch up")
    t0 = time.time()
    time.sleep(seconds)
    t1 = time.time()
    final = "alerts" if fault else "inference"

    def done() -> bool:
        windows = arrivals.between(t0, t1)
        return all(final in seen for seen in windows.values())

    with contextlib.suppress(TimeoutError):
        _wait(done, 30 + seconds, "the last windows' results")
    windows = arrivals.between(t0, t1)
    stages: dict[str, list[float]] = {"sensor->fft": [], "fft->detector": [], "detector->actuator": [], "total": []}
    inference_total: list[float] = []
    for ts, seen in windows.items():
        if "inference" in seen:
            inference_total.append(seen["inference"] - ts)
        if final not in seen:
            continue
        stages["total"].append(seen[final] - ts)
        if "raw" in seen and "features" in seen:
            stages["sensor->fft"].append(seen["raw"] - ts)
            stages["fft->detector"].append(seen["features"] - seen["raw"])
            stages["detector->actuator"].append(seen[final] - seen["features"])
    return {
        "rate": rate,
        "fault": fault,
        "seconds": t1 - t0,
        "windows": len(windows),
        "sentPerSec": len(windows) / (t1 - t0),
        "results": len(stages["total"]),
        "stages": {k: _pct(v) for k, v in stages.items()},
        "inference": _pct(inference_total),
    }


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over repeats of every number of one scenario."""
    first = runs[0]

    def med(get: Callable[[dict[str, Any]], float]) -> float:
        values = [v for v in (get(r) for r in runs) if not math.isnan(v)]
        return float(statistics.median(values)) if values else math.nan

    stages = {
        stage: {k: med(lambda r, s=stage, k=k: r["stages"][s][k]) for k in first["stages"][stage]}
        for stage in first["stages"]
    }
    return {
        "rate": first["rate"],
        "fault": first["fault"],
        "repeats": len(runs),
        "windows": med(lambda r: r["windows"]),
        "results": med(lambda r: r["results"]),
        "sentPerSec": med(lambda r: r["sentPerSec"]),
        "stages": stages,
        "inference": {k: med(lambda r, k=k: r["inference"][k]) for k in first["inference"]},
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------------- report


def _table(results: dict[str, Any]) -> str:
    base = results["baseline"]
    lines = [
        "| scenario | windows/s asked / sent | windows (results) | stage | p50 | p95 | p99 | max |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]

    def row(label: str, rate: str, count: str, stage: str, p: dict[str, float]) -> None:
        lines.append(
            f"| {label} | {rate} | {count} | {stage} | {p['p50']:.1f} | {p['p95']:.1f} | {p['p99']:.1f} "
            f"| {p['max']:.1f} |"
        )

    for s in results["scenarios"]:
        result = "alert" if s["fault"] else "inference result"
        label = f"{'stalled' if s['fault'] else 'healthy'}, sensor → {result} at {s['rate']:g}/s"
        rate = f"{s['rate']:g} / {s['sentPerSec']:.1f}"
        count = f"{s['windows']:.0f} ({s['results']:.0f})"
        row(f"**{label}**", rate, count, "**total**", s["stages"]["total"])
        for stage in ("sensor->fft", "fft->detector", "detector->actuator"):
            row("", "", "", stage.replace("->", " → "), s["stages"][stage])
    n = results["baseline_windows"]
    row("baseline: same chain in one process, no hub", "", f"{n}", "fft (decode raw, FFT, encode)", base["fft"])
    row("", "", "", "detector (decode, infer, encode alert)", base["detector"])
    row("", "", "", "**total** (+ decode alert)", base["chain"])
    row("", "", "", "compute only (FFT + inference)", base["compute"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2,20,50", help="sensor windows per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per scenario above 2/s")
    parser.add_argument("--design-seconds", type=float, default=40.0, help="measured seconds per scenario at 2/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-windows", type=int, default=500)
    parser.add_argument("--fault", default="stall", help="the fault injected so that every window alerts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: dict[str, Any] = {
        "baseline": baseline(args.baseline_windows),
        "baseline_windows": args.baseline_windows,
    }
    runs: dict[tuple[float, str | None], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="outpost-bench-ref-") as tmp:
        device = Device(Path(tmp))
        try:
            device.start()
            for repeat in range(args.repeats):
                for rate in rates:
                    for fault in (None, args.fault):
                        seconds = args.design_seconds if rate <= DESIGN_RATE else args.seconds
                        run = run_scenario(device, rate, fault, seconds)
                        run["repeat"] = repeat
                        runs.setdefault((rate, fault), []).append(run)
                        total = run["stages"]["total"]
                        print(
                            f"repeat {repeat + 1}: {rate:g}/s {fault or 'healthy'}: {run['windows']} windows, "
                            f"{run['results']} results, p50 {total['p50']:.1f} ms, p99 {total['p99']:.1f} ms",
                            file=sys.stderr,
                        )
            results["probeDuplicates"] = device.arrivals.duplicates
        finally:
            device.stop()
    results["scenarios"] = [_median_runs(r) for r in runs.values()]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"Median of {args.repeats} repeats; latencies in ms per window, from motor-sensor's send to the result "
        "available at its consumer's input."
    )
    print()
    print(_table(results))


if __name__ == "__main__":
    main()
