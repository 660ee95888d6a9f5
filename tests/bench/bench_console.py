"""Console benchmark: page latency of the fleet console with N devices and D deployments.

Run: ``scripts/bench console`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_console.py
--devices 10000 --deployments 50``). One ``outpost fleet serve`` on SQLite and 127.0.0.1; N devices
written straight into its database (what N activations leave, as bench_fleet does), D deployments
pushed through the API, a tenth of the devices reporting success on their assignment. A signed-in
client then loads each page once to warm up and R times, one at a time; the baseline, in the same run and process, is
the API's own answer for the same data (``GET /api/v1/devices``, one deployment's status).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_fleet import SITES, content, provision

from integration.fleet_harness import FleetProcess


def timings(client: httpx.Client, path: str, rounds: int) -> dict[str, float]:
    assert client.get(path).status_code == 200  # warm-up, not counted: the first load of a fresh process
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    samples.sort()
    return {
        "p50_ms": 1000 * statistics.median(samples),
        "p95_ms": 1000 * samples[min(len(samples) - 1, int(0.95 * len(samples)))],
    }


def run(n: int, deployments: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fleet = FleetProcess(root / "fleet").start()
        try:
            credentials = provision(f"sqlite:///{root / 'fleet' / 'fleet.db'}", n)
            with fleet.client() as operator:
                for i in range(deployments):
                    body = {"document": content(f"d{i}"), "name": f"d{i}", "priority": i,
                            "targetCondition": f"tags.site = '{SITES[i % len(SITES)]}'"}  # fmt: skip
                    assert operator.post("/api/v1/deployments", json=body).status_code == 201
                for device_id in list(credentials)[: n // 10]:
                    device = fleet.client(credentials[device_id])
                    etag = device.get(f"/api/v1/devices/{device_id}/deployment").json()["etag"]
                    agent = {"lastDesiredStatus": {"code": 200}, "outpost": {"fleetEtag": etag}}
                    device.patch(f"/api/v1/devices/{device_id}/modules/reported", json={"$edgeAgent": agent})
            console = httpx.Client(base_url=fleet.url, timeout=120)
            assert console.post("/login", data={"token": fleet.token}).status_code == 303
            api = fleet.client()
            api.timeout = httpx.Timeout(120)
            first = next(iter(credentials))
            return {
                "overview": timings(console, "/", rounds),
                "devices page": timings(console, "/devices", rounds),
                "devices page, filtered": timings(console, "/devices?q=site-3&page=2", rounds),
                "device page": timings(console, f"/devices/{first}", rounds),
                "deployment page": timings(console, "/deployments/d0", rounds),
                "baseline: API device list": timings(api, "/api/v1/devices", rounds),
                "baseline: API one status": timings(api, "/api/v1/deployments/d0/status", rounds),
            }
        finally:
            fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    results = run(args.devices, args.deployments, args.rounds)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.devices} devices, {args.deployments} deployments, {args.rounds} sequential loads each, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")  # fmt: skip
    print("| page | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |")


if __name__ == "__main__":
    main()
