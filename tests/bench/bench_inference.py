"""Benchmark of anomaly-detector inference: the shipped int8 model against the same network in float32.

Run: ``.venv/bin/python tests/bench/bench_inference.py [--json] [--messages N] [--repeats R]``

Both models run through LiteRT (``ai-edge-litert``, 1 thread, no Edge TPU) in the same process, on the
same inputs: features messages made by the motor-sensor simulator and the fft-filter code (healthy and
each fault), cycled to ``--messages`` messages. Two measurements per model, each repeated ``--repeats``
times with the models alternating (the best repeat is kept, to keep scheduler noise out):

* ``per message``: ``ModelManager.infer(features)``, what the module does for every input message
  (read the 4 inputs from the message, normalise, quantise, invoke, dequantise), timed one message at a
  time, giving p50/p99 latency and the throughput of a loop of them;
* ``invoke only``: ``LoadedModel.predict`` on pre-normalised vectors (quantise, invoke, dequantise).

Also prints the int8 vs float score agreement on those inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _path in (
    REPO / "modules" / "motor-sensor",
    REPO / "modules" / "fft-filter",
    REPO / "modules" / "anomaly-detector",
    REPO / "ci" / "model",
):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
from anomaly_detector.swap import ModelManager  # noqa: E402
from fft_filter.features import FilterSettings, extract  # noqa: E402
from motor_sensor.simulator import Fault, MotorSimulator, SensorSettings  # noqa: E402

INT8 = REPO / "modules" / "anomaly-detector" / "anomaly_detector" / "models" / "motor-v1.tflite"
FLOAT = REPO / "ci" / "model" / "artifacts" / "motor-v1-float.tflite"


def make_messages(per_kind: int) -> list[dict[str, Any]]:
    messages = []
    for i, kind in enumerate((None, "bearing_wear", "overheating", "stall")):
        faults = () if kind is None else (Fault(kind),)
        sim = MotorSimulator(SensorSettings(seed=1000 + i, faults=faults))
        for _ in range(per_kind):
            messages.append(extract(sim.next_window().to_message("bench", 0.0), FilterSettings()))
    return messages


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def measure(manager: ModelManager, messages: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Per-message latency (one ``infer`` each) and the loop's throughput."""
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        manager.infer(messages[i % len(messages)])
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    return {
        "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
        "mean_us": statistics.fmean(latencies) * 1e6,
        "throughput_per_s": n / total,
    }


def measure_invoke(manager: ModelManager, vectors: np.ndarray, n: int) -> dict[str, float]:
    model = manager.current
    assert model is not None
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        model.predict(vectors[i % len(vectors)])
        latencies.append(time.perf_counter() - t0)
    return {"p50_us": percentile(latencies, 50) * 1e6, "p99_us": percentile(latencies, 99) * 1e6}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The repeat with the lowest p50 (the least disturbed one)."""
    return min(runs, key=lambda r: r["p50_us"])


def run(messages_count: int, repeats: int) -> dict[str, Any]:
    managers = {}
    for name, path in (("int8", INT8), ("float32", FLOAT)):
        manager = ModelManager(edgetpu="off")
        manager.load_file(path, version=name)
        managers[name] = manager
    messages = make_messages(50)
    spec = managers["int8"].current.spec  # type: ignore[union-attr]
    vectors = spec.normalize(np.array([spec.raw_vector(m) for m in messages])).astype(np.float32)
    for manager in managers.values():  # warm up
        measure(manager, messages, 200)

    per_message: dict[str, list[dict[str, float]]] = {name: [] for name in managers}
    invoke: dict[str, list[dict[str, float]]] = {name: [] for name in managers}
    for _ in range(repeats):
        for name, manager in managers.items():
            per_message[name].append(measure(manager, messages, messages_count))
            invoke[name].append(measure_invoke(manager, vectors, messages_count))

    scores = {name: np.array([m.infer(msg).score for msg in messages]) for name, m in managers.items()}
    diff = np.abs(scores["int8"] - scores["float32"])
    results: dict[str, Any] = {"messages": messages_count, "repeats": repeats, "models": {}}
    for name, manager in managers.items():
        model = manager.current
        assert model is not None
        results["models"][name] = {
            "file": str((INT8 if name == "int8" else FLOAT).relative_to(REPO)),
            "size_bytes": model.size_bytes,
            "per_message": best(per_message[name]),
            "invoke_only": best(invoke[name]),
        }
    results["agreement"] = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "same_decision_at_0.8": float(np.mean((scores["int8"] > 0.8) == (scores["float32"] > 0.8))),
    }
    try:
        from importlib.metadata import version

        results["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # pragma: no cover
        results["ai_edge_litert"] = "unknown"
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Inference, LiteRT {results['ai_edge_litert']}, 1 thread, CPU; {results['messages']} messages, "
        f"best of {results['repeats']} repeats",
        "",
        "| model | size | per message p50 | per message p99 | throughput | invoke only p50 | invoke only p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        pm, io = m["per_message"], m["invoke_only"]
        lines.append(
            f"| {name} | {m['size_bytes']} B | {pm['p50_us']:.1f} us | {pm['p99_us']:.1f} us | "
            f"{pm['throughput_per_s']:,.0f} msg/s | {io['p50_us']:.1f} us | {io['p99_us']:.1f} us |"
        )
    a = results["agreement"]
    lines += [
        "",
        f"int8 vs float32 scores: max |diff| {a['max_abs_diff']:.4f}, mean {a['mean_abs_diff']:.4f}, "
        f"same decision at 0.8: {a['same_decision_at_0.8']:.2%}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = run(args.messages, args.repeats)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
