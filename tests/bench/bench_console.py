"""Console benchmark: page latency of the fleet console, and what its live updates cost the device API.

Run: ``scripts/bench console`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_console.py
--devices 10000 --deployments 50 [--only pages|live|series]``). One ``outpost fleet serve`` on SQLite and
127.0.0.1; N devices written straight into its database (what N activations leave, as bench_fleet
does), D deployments pushed through the API.

- **pages**: a tenth of the devices report success on their assignment; a signed-in client loads
  each page once to warm up and R times, one at a time; the baseline, in the same run and process,
  is the API's own answer for the same data (``GET /api/v1/devices``, one deployment's status).
- **live**: the device API under a push to all devices, with and without console watchers, in the
  same run and process. Each round: all N devices hold a long-poll (bench_fleet's raw HTTP/1.1
  clients); once the fleet's gauge says every one waits, every device reports its agent status
  every 30 s (N/30 reports/s, with the ETag it holds, so the convergence bars move); half-way
  through, a push targets all N devices, and each device reports on it as soon as it has it.
  Rounds alternate without watchers and with W signed-in ``/console/events`` streams (W open
  browser tabs): p50/p99 of the reports sent before the push (steady reporting) and from it on,
  the time until all N have the push, the convergence events the watchers received, how long after
  the push their bars showed it targeting all N devices, and the most successful devices they
  showed. A baseline round on a bare uvicorn app comes first (N requests held and answered at once
  half-way, the same report rate).
- **series**: what keeping the reported metrics costs the report path, in process (see
  :func:`series_cost`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from bench_fleet import (
    BARE,
    SITES,
    Conn,
    all_waiting,
    content,
    free_port,
    hold_bare,
    open_pool,
    open_tabs,
    provision,
    release_bare,
    wait_http,
)  # fmt: skip

from integration.fleet_harness import FleetProcess
from outpost.fleet.adapters.console_store import SqlConsoleStore
from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.series import Recorder
from outpost.fleet.service import FleetService


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


@contextmanager
def _fleet(n: int, deployments: int) -> Iterator[tuple[FleetProcess, dict[str, str]]]:
    """One fleet process on SQLite with ``n`` devices and ``deployments`` deployments (one site each)."""
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
            yield fleet, credentials
        finally:
            fleet.stop()


def run(n: int, deployments: int, rounds: int) -> dict[str, Any]:
    with _fleet(n, deployments) as (fleet, credentials):
        for device_id in list(credentials)[: n // 10]:  # a tenth reports success
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


# -- live updates under a push to all devices -------------------------------------------------


async def _round(fleet: FleetProcess, credentials: dict[str, str], name: str, watchers: int, seconds: float, *,
                 metrics: bool = False) -> dict[str, Any]:  # fmt: skip
    """N long-polls held, N/30 reports/s, a push to all half-way; ``watchers`` live feeds open throughout.

    ``metrics``: each report also carries the anomaly detector's reported numbers (5 of them), which
    the fleet keeps as time series for the console's plots."""
    ids = list(credentials)
    conns: dict[str, Conn] = {}
    etags: dict[str, str] = {}
    gate = asyncio.Semaphore(200)

    async def connect(device_id: str) -> None:
        async with gate:
            conn = Conn(fleet.port, {"Authorization": f"Bearer {credentials[device_id]}"})
            await conn.open()
            status, headers, _ = await conn.request("GET", f"/api/v1/devices/{device_id}/deployment")
            assert status == 200, status
            conns[device_id], etags[device_id] = conn, headers["etag"]

    await asyncio.gather(*(connect(d) for d in ids))
    arrived: dict[str, float] = {}

    async def hold(device_id: str) -> None:
        conn = conns[device_id]
        while True:
            try:
                status, headers, _ = await conn.request("GET", f"/api/v1/devices/{device_id}/deployment?wait=120",
                                                        extra=f"If-None-Match: {etags[device_id]}\r\n")  # fmt: skip
            except (ConnectionError, asyncio.IncompleteReadError):
                conn = conns[device_id] = Conn(fleet.port, conn.headers_dict)
                await conn.open()
                continue
            if status == 200:
                arrived[device_id] = time.perf_counter()
                etags[device_id] = headers["etag"].strip('"')
                return

    holders = [asyncio.create_task(hold(d)) for d in ids]
    events: list[tuple[float, dict[str, Any]]] = []  # each event's arrival and bars
    tabs = open_tabs(fleet, watchers, lambda bars: events.append((time.perf_counter(), bars)))
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.token}"},
                                 timeout=300) as operator:  # fmt: skip
        await all_waiting(operator, len(ids))  # the load starts once every long-poll waits in the fleet
    pool, free = await open_pool(fleet.port)
    latencies: list[tuple[float, float]] = []  # (sent, took)
    errors = 0

    async def report(device_id: str, i: int) -> None:
        nonlocal errors
        conn = await free.get()
        try:
            agent = {"lastDesiredStatus": {"code": 200, "description": ""},
                     "outpost": {"fleetEtag": etags[device_id].strip('"'), "converging": False}}  # fmt: skip
            patches: dict[str, Any] = {"$edgeAgent": agent}
            if metrics:
                inference = {"count": i * 100, "latencyMsP50": 4.2, "latencyMsP99": 6.1}
                patches["anomaly-detector"] = {"inference": inference, "alerts": {"count": i // 7},
                                               "lastInference": {"score": 0.37}}  # fmt: skip
            body = json.dumps(patches).encode()
            started = time.perf_counter()
            status, _, _ = await conn.request("PATCH", f"/api/v1/devices/{device_id}/modules/reported", body,
                                              extra=f"Authorization: Bearer {credentials[device_id]}\r\n")  # fmt: skip
            latencies.append((started, time.perf_counter() - started))
            errors += status != 200
        finally:
            free.put_nowait(conn)

    rate = len(ids) / 30.0
    order = random.Random(name).sample(ids, len(ids))
    tasks: list[asyncio.Task[None]] = []
    pushed = 0.0
    began = time.perf_counter()
    i = 0
    while time.perf_counter() - began < seconds:
        if not pushed and time.perf_counter() - began > seconds / 2:
            async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.token}"},
                                         timeout=60) as operator:  # fmt: skip
                body = {"document": content(name), "name": name, "targetCondition": "*", "priority": 100}
                assert (await operator.post("/api/v1/deployments", json=body)).status_code == 201
            pushed = time.perf_counter()
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(report(order[i % len(order)], i)))
        i += 1
    await asyncio.gather(*tasks)
    await asyncio.wait_for(asyncio.gather(*holders), 300)
    for tab in tabs:
        tab.cancel()
    await asyncio.gather(*tabs, return_exceptions=True)
    for conn in [*pool, *conns.values()]:
        conn.close()
    shown_all = [t - pushed for t, bars in events if bars.get(name, {}).get("targetedCount") == len(ids)]
    return {
        "watchers": watchers,
        "metrics": metrics,
        "reports": len(latencies),
        "errors": errors,
        "rate": rate,
        **_percentiles(latencies, pushed),
        "push_all_s": max(arrived.values()) - pushed,
        "events": len(events),
        # when a watcher's bar first showed the push targeting every device, and the most successful it showed
        "bar_all_s": min(shown_all, default=float("nan")),
        "bar_successful": max((bars.get(name, {}).get("reportedSuccessfulCount", 0) for _, bars in events), default=0),
    }


def _percentiles(latencies: list[tuple[float, float]], pushed: float) -> dict[str, float]:
    """p50 / p99 in ms of the requests sent before the push (steady reporting) and from it on, and the max."""
    result = {"max_ms": 1000 * max(took for _, took in latencies)}
    for part, took in (("steady", [t for s, t in latencies if s < pushed]), ("push", [t for s, t in latencies
                                                                                      if s >= pushed])):  # fmt: skip
        took.sort()
        result[f"{part}_p50_ms"] = 1000 * took[len(took) // 2]
        result[f"{part}_p99_ms"] = 1000 * took[int(0.99 * len(took))]
    return result


async def _bare_round(port: int, n: int, seconds: float) -> dict[str, Any]:
    """The baseline round on a bare uvicorn app (bench_fleet's): N requests held, N/30 requests/s,
    all held ones answered half-way with a body the size of a deployment. What this machine and this
    client give when the server does nothing but HTTP."""
    conns, holders, arrived = await hold_bare(port, n)
    pool, free = await open_pool(port)
    latencies: list[tuple[float, float]] = []

    async def report() -> None:
        conn = await free.get()
        try:
            started = time.perf_counter()
            await conn.request("PATCH", "/report", b'{"$edgeAgent": {"lastDesiredStatus": {"code": 200}}}')
            latencies.append((started, time.perf_counter() - started))
        finally:
            free.put_nowait(conn)

    rate, tasks, released, began, i = n / 30.0, [], 0.0, time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        if not released and time.perf_counter() - began > seconds / 2:
            released = await release_bare(port)
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(report()))
        i += 1
    await asyncio.gather(*tasks, *holders)
    for conn in [*pool, *conns]:
        conn.close()
    return {"watchers": "bare", "metrics": False, "reports": len(latencies), "errors": 0, "rate": rate,
            **_percentiles(latencies, released), "push_all_s": max(arrived) - released, "events": 0,
            "bar_all_s": float("nan"), "bar_successful": 0}  # fmt: skip


def bare(n: int, seconds: float, body_bytes: int) -> dict[str, Any]:
    """One baseline round (:func:`_bare_round`) against a bare uvicorn process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(body_bytes)])
    try:
        wait_http(port)
        return asyncio.run(_bare_round(port, n, seconds))
    finally:
        process.terminate()
        process.wait()


def live(n: int, deployments: int, watchers: int, seconds: float) -> list[dict[str, Any]]:
    """A bare baseline round, then rounds without, with, and again without ``watchers`` live feeds,
    on one fleet process."""
    with _fleet(n, deployments) as (fleet, credentials):
        device = next(iter(credentials))
        with fleet.client(credentials[device]) as client:
            body_bytes = len(client.get(f"/api/v1/devices/{device}/deployment").content)
        plan = [("push-a", 0, False), ("push-b", watchers, False), ("push-c", 0, False),
                ("push-d", watchers, False), ("push-e", 0, True), ("push-f", watchers, True)]  # fmt: skip
        rounds = [asyncio.run(_round(fleet, credentials, name, w, seconds, metrics=m)) for name, w, m in plan]
    return [bare(n, seconds, body_bytes), *rounds]


# -- what keeping the reported metrics costs, in process ---------------------------------------


def series_cost(n: int, seconds: int = 30) -> dict[str, float]:
    """The report path with and without the series hook, and the batch writer's work per second.

    On one SQLite fleet database with N devices: ``report_modules`` of a detector report (its baseline:
    the same call with the hook a no-op), ``Recorder.record`` alone, and ``Recorder.flush`` of one
    second of N/30 reports (5 numbers each), ``seconds`` times, so the table holds that many points.
    """
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fleet.db"
        ids = list(provision(url, n))
        store = SqlStore.open(url)
        recorder = Recorder(SqlConsoleStore(store.engine))
        service = FleetService(store)

        def patch(i: int) -> dict[str, Any]:
            return {"anomaly-detector": {"inference": {"count": i, "latencyMsP50": 4.2, "latencyMsP99": 6.0},
                                         "alerts": {"count": i // 7}, "lastInference": {"score": 0.37}}}  # fmt: skip

        def reports(count: int) -> float:
            started = time.perf_counter()
            for i in range(count):
                device = ids[i % len(ids)]
                service.report_modules(Principal(Kind.DEVICE, device), device, patch(i))
            return (time.perf_counter() - started) / count

        reports(1000)  # warm-up: every measured report updates an existing module twin
        runs: dict[bool, list[float]] = {False: [], True: []}
        for hooked in [False, True] * 4:  # alternated, so the machine's load falls on both alike
            service.on_report = recorder.record if hooked else (lambda _device, _patches: None)
            runs[hooked].append(reports(1000))
            recorder.flush()
        without, with_hook = statistics.median(runs[False]), statistics.median(runs[True])
        started = time.perf_counter()
        for i in range(10_000):
            recorder.record(ids[i % len(ids)], patch(i))
        record_s = (time.perf_counter() - started) / 10_000
        recorder.flush()
        per_second = len(ids) // 30
        flushes = []
        for second in range(seconds):
            for i in range(per_second):
                recorder.record(ids[(second * per_second + i) % len(ids)], patch(i))
            started = time.perf_counter()
            recorder.flush()
            flushes.append(time.perf_counter() - started)
        store.close()
    flushes.sort()
    return {
        "report_ms": 1000 * without,
        "report_with_hook_ms": 1000 * with_hook,
        "record_us": 1e6 * record_s,
        "reports_per_s": per_second,
        "flush_ms_p50": 1000 * flushes[len(flushes) // 2],
        "flush_ms_max": 1000 * flushes[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--watchers", type=int, default=5, help="live feeds open in the rounds with watchers")
    parser.add_argument("--seconds", type=float, default=40.0, help="report load per live round")
    parser.add_argument("--only", choices=["pages", "live", "series"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.only in {None, "series"}:
        load = os.getloadavg()
        cost = series_cost(args.devices)
        print(f"reported metric series, in process, {args.devices} devices on SQLite; {os.cpu_count()} cores, load "
              f"average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")  # fmt: skip
        print("| measure | value |")
        print("|---|---|")
        print(f"| report_modules of a detector report (5 numbers), hook off (baseline), median of 4 x 1000 | "
              f"{cost['report_ms']:.3f} ms |")  # fmt: skip
        print(f"| the same, hook on (numbers buffered), alternated with the above | "
              f"{cost['report_with_hook_ms']:.3f} ms |")  # fmt: skip
        print(f"| Recorder.record alone | {cost['record_us']:.1f} µs |")
        print(f"| one flush of a second of {cost['reports_per_s']} reports ({5 * cost['reports_per_s']} points), "
              f"p50 / max of 30 | {cost['flush_ms_p50']:.1f} / {cost['flush_ms_max']:.1f} ms |")  # fmt: skip
    if args.only == "series":
        return
    if args.only in {None, "live"}:
        load = os.getloadavg()
        rounds = live(args.devices, args.deployments, args.watchers, args.seconds)
        if args.json:
            print(json.dumps(rounds, indent=2))
        else:
            print(f"{args.devices} devices, {args.deployments} deployments, {rounds[0]['rate']:.0f} reports/s for "
                  f"{args.seconds:.0f} s a round, a push to all half-way; {os.cpu_count()} cores, load average "
                  f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")  # fmt: skip
            print("| round | console watchers | reports carry detector metrics | steady p50 / p99 ms | during the "
                  "push p50 / p99 ms | max ms | all devices have the push (s) | convergence events received | bar "
                  "shows all targeted (s) | successful shown live |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|---|---|")
            for number, r in enumerate(rounds):
                print(f"| {number or 'bare'} | {r['watchers']} | {'yes' if r['metrics'] else 'no'} | "
                      f"{r['steady_p50_ms']:.1f} / {r['steady_p99_ms']:.1f} | {r['push_p50_ms']:.1f} / "
                      f"{r['push_p99_ms']:.1f} | {r['max_ms']:.0f} | {r['push_all_s']:.2f} | "
                      f"{r['events']} | {r['bar_all_s']:.2f} | {r['bar_successful']} |")  # fmt: skip
            print(f"errors: {sum(r['errors'] for r in rounds)} of {sum(r['reports'] for r in rounds)} reports")
    if args.only == "live":
        return
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
