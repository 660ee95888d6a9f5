"""Benchmark of compiled route and target conditions against hand-written Python.

Run: ``.venv/bin/python tests/bench/bench_conditions.py [--json] [--repeats N]``

Measures, with ``time.perf_counter`` and the median of several repeats:

* evaluations/s of ``$body.temperature > 50 AND severity = 'high'``, compiled, against a
  hand-written function doing the same check (``json.loads`` + property compare), both
  with a fresh message per evaluation (JSON parse included; the two interleaved, repeat by
  repeat, so that both meet the same load) and with a pre-parsed body; rates by the wall
  clock and per second of CPU time;
* evaluations/s of a target condition on a twin;
* parse + compile time per route.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from outpost.lang import RoutingMessage, compile_condition, compile_target, parse_route

CONDITION = "$body.temperature > 50 AND severity = 'high'"
TARGET = "tags.environment = 'test' AND properties.reported.devicemodel = '4000x'"
ROUTE = (
    "FROM /messages/modules/tempSensor/outputs/temperatureOutput "
    "WHERE $body.temperature > 50 AND severity = 'high' "
    'INTO BrokeredEndpoint("/modules/filter/inputs/input1")'
)
BODY = b'{"temperature": 72.5, "humidity": 31, "machine": {"status": "running"}}'
PROPERTIES = {"severity": "high", "processingPath": "hot"}
SYSTEM = {"contentType": "application/json", "contentEncoding": "utf-8", "connectionDeviceId": "dev1"}
TWIN: dict[str, Any] = {
    "deviceId": "edge-01",
    "tags": {"environment": "test"},
    "properties": {"reported": {"devicemodel": "4000x"}, "desired": {}},
}


def baseline_fresh(properties: dict[str, str], body: bytes) -> bool:
    """What a hand-written router would do: parse the body, compare two fields."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    temperature = document.get("temperature") if isinstance(document, dict) else None
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature > 50
        and properties.get("severity") == "high"
    )


def baseline_parsed(properties: dict[str, str], document: Any) -> bool:
    """The same check on an already parsed body."""
    temperature = document.get("temperature") if isinstance(document, dict) else None
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature > 50
        and properties.get("severity") == "high"
    )


def rate(loop: Callable[[int], None], count: int, repeats: int) -> float:
    """Median operations per second of ``loop(count)`` over ``repeats`` runs (wall clock)."""
    return _rates(loop, count, repeats)[0]


def _paired(
    first: Callable[[int], None], second: Callable[[int], None], count: int, repeats: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``_rates`` of two loops with their repeats interleaved, so both meet the same machine load."""
    runs = [_rates(loop, count, 1) for _ in range(repeats) for loop in (first, second)]
    return _median_pair(runs[0::2]), _median_pair(runs[1::2])


def _median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _rates(loop: Callable[[int], None], count: int, repeats: int) -> tuple[float, float]:
    """Median operations per second by the wall clock and by this process's CPU time.

    On a shared machine the wall clock also counts the time other processes held the CPU;
    CPU time does not, so it is the steadier figure of the code's own speed.
    """
    loop(min(count, 1000))  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        loop(count)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return count / statistics.median(wall), count / max(statistics.median(cpu), 1e-9)


def measure(count: int, repeats: int) -> dict[str, float]:
    """Run every measurement; returns evaluations/s and microseconds per parse."""
    condition = compile_condition(CONDITION)
    evaluate = condition.evaluate
    target = compile_target(TARGET)
    parsed = RoutingMessage(PROPERTIES, SYSTEM, BODY)
    document = parsed.json_body()
    if not (condition(parsed) and baseline_fresh(PROPERTIES, BODY) and target(TWIN)):
        raise SystemExit("benchmark inputs do not match; the numbers would be meaningless")

    def compiled_fresh(n: int) -> None:
        for _ in range(n):
            condition(RoutingMessage(PROPERTIES, SYSTEM, BODY))

    def compiled_fresh_raw(n: int) -> None:
        for _ in range(n):
            evaluate(RoutingMessage(PROPERTIES, SYSTEM, BODY))

    def handwritten_fresh(n: int) -> None:
        for _ in range(n):
            baseline_fresh(PROPERTIES, BODY)

    def compiled_parsed(n: int) -> None:
        for _ in range(n):
            condition(parsed)

    def handwritten_parsed(n: int) -> None:
        for _ in range(n):
            baseline_parsed(PROPERTIES, document)

    def target_eval(n: int) -> None:
        for _ in range(n):
            target(TWIN)

    def route_parse(n: int) -> None:
        for _ in range(n):
            parse_route(ROUTE)

    (fresh_wall, fresh_cpu), (baseline_wall, baseline_cpu) = _paired(compiled_fresh, handwritten_fresh, count, repeats)
    return {
        "condition_fresh_per_s": fresh_wall,
        "condition_fresh_cpu_per_s": fresh_cpu,
        "condition_fresh_raw_per_s": rate(compiled_fresh_raw, count, repeats),
        "baseline_fresh_per_s": baseline_wall,
        "baseline_fresh_cpu_per_s": baseline_cpu,
        "condition_parsed_per_s": rate(compiled_parsed, count, repeats),
        "baseline_parsed_per_s": rate(handwritten_parsed, count, repeats),
        "target_per_s": rate(target_eval, count, repeats),
        "route_parse_compile_us": 1e6 / rate(route_parse, max(count // 200, 50), repeats),
    }


def table(results: dict[str, float]) -> str:
    """A small markdown table of the results."""
    rows = [
        ("compiled condition, fresh message (JSON parse included)", results["condition_fresh_per_s"], "evals/s"),
        ("  same, per second of CPU time", results["condition_fresh_cpu_per_s"], "evals/s"),
        ("  same, calling `Condition.evaluate` directly", results["condition_fresh_raw_per_s"], "evals/s"),
        ("hand-written Python, `json.loads` + compare", results["baseline_fresh_per_s"], "evals/s"),
        ("  same, per second of CPU time", results["baseline_fresh_cpu_per_s"], "evals/s"),
        ("compiled condition, body already parsed", results["condition_parsed_per_s"], "evals/s"),
        ("hand-written Python, body already parsed", results["baseline_parsed_per_s"], "evals/s"),
        ("target condition on a twin", results["target_per_s"], "evals/s"),
        ("parse + compile one route (with WHERE)", results["route_parse_compile_us"], "µs"),
    ]
    lines = ["| measurement | value | unit |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {value:,.0f} | {unit} |" for name, value, unit in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: print a markdown table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--count", type=int, default=200_000, help="evaluations per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; the median is reported")
    args = parser.parse_args(argv)
    results = measure(args.count, args.repeats)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "condition": CONDITION, **results}, indent=2))
    else:
        print(f"condition: `{CONDITION}`; target: `{TARGET}`; Python {sys.version.split()[0]}\n")
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
