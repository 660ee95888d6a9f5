"""Fleet benchmark: simulated devices (lightweight clients of the real device API) against one fleet.

Run: ``scripts/bench fleet`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_fleet.py
--devices 10000 [--db postgresql] [--json]``). Everything runs on this machine over 127.0.0.1:
one ``outpost fleet serve`` process and, in this process, N simulated devices, each one keep-alive
HTTP/1.1 connection written with asyncio streams (no HTTP client library in the measured path).

It measures:
- **push to all**: N devices hold a long-poll with their current ETag; one push targets all of them;
  the time from the push's answer until every device has its new deployment. Baseline: a bare
  uvicorn ASGI app holding the same N requests and releasing them with the same body size;
- **device API latency** while every device reports its status every 30 s (N/30 reports per second,
  the long-polls still held): p50/p99 of ``PATCH .../modules/reported``; baseline: the same rate of
  requests to the bare app;
- **resolution**: the effective deployment of N devices against 50 deployments, in process, and
  the raw cost of evaluating the 50 compiled target conditions on N twins;
- **fleet RSS** with N devices connected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from integration.agent_harness import manifest, module
from integration.conftest_mosquitto import free_port
from integration.fleet_harness import SCRIPT, FleetProcess, fresh_database
from outpost.fleet.adapters import database
from outpost.fleet.credentials import Kind, hash_secret, make_credential
from outpost.fleet.models import DeploymentRecord, DeviceRecord, now_utc
from outpost.fleet.resolution import Resolver, target
from outpost.fleet.twins import device_twin

SITES = [f"site-{i}" for i in range(20)]


# -- a minimal HTTP/1.1 client over asyncio streams ---------------------------------------------


class Conn:
    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers_dict = headers
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    async def request(
        self, method: str, path: str, body: bytes = b"", extra: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.headers}{extra}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- setting up N devices --------------------------------------------------------------------


def provision(url: str, n: int) -> dict[str, str]:
    """N activated devices written straight into the fleet's database (what N activations would leave)."""
    store = database.SqlStore.open(url)
    credentials: dict[str, str] = {}
    rows = []
    for i in range(n):
        device_id = f"dev-{i:05d}"
        credential = make_credential(Kind.DEVICE, device_id)
        credentials[device_id] = str(credential)
        rows.append({
            "id": device_id, "tags": {"site": SITES[i % len(SITES)], "ring": i % 10}, "status": "enabled",
            "activation_hash": None, "credential_hash": hash_secret(credential.secret), "desired": {},
            "reported": {}, "version": 1, "created": now_utc(), "last_activity": None,
        })  # fmt: skip
    with store.engine.begin() as c:
        for start in range(0, n, 2000):
            c.execute(database.devices.insert(), rows[start : start + 2000])
    store.close()
    return credentials


def content(tag: str) -> dict[str, Any]:
    return manifest({f"m{k}": module(order=k, env={"TAG": tag}) for k in range(1, 6)})


async def push_to_all(port: int, credentials: dict[str, str], operator: str) -> dict[str, float]:
    """Hold N long-polls, push, and time until all N have the new deployment."""
    conns: dict[str, Conn] = {}
    etags: dict[str, str] = {}
    sem = asyncio.Semaphore(200)

    async def connect(device_id: str, credential: str) -> None:
        async with sem:
            conn = Conn(port, {"Authorization": f"Bearer {credential}"})
            await conn.open()
            status, headers, _ = await conn.request("GET", f"/api/v1/devices/{device_id}/deployment")
            assert status == 200, status
            conns[device_id] = conn
            etags[device_id] = headers["etag"]

    began = time.perf_counter()
    await asyncio.gather(*(connect(d, c) for d, c in credentials.items()))
    connect_s = time.perf_counter() - began
    done: dict[str, float] = {}

    async def hold(device_id: str) -> None:
        while True:
            conn = conns[device_id]
            try:
                status, headers, _ = await conn.request(
                    "GET",
                    f"/api/v1/devices/{device_id}/deployment?wait=120",
                    extra=f"If-None-Match: {etags[device_id]}\r\n",
                )
            except (ConnectionError, asyncio.IncompleteReadError):  # idle past keep-alive while others connected
                conns[device_id] = Conn(port, conn.headers_dict)
                await conns[device_id].open()
                continue
            if status == 200:
                done[device_id] = time.perf_counter()
                etags[device_id] = headers["etag"]
                return

    holders = [asyncio.create_task(hold(d)) for d in conns]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {operator}"},
                                 timeout=300) as client:  # fmt: skip
        await all_waiting(client, len(conns))
        body = {"document": content("pushed"), "name": "to-all", "targetCondition": "*", "priority": 10}
        response = await client.post("/api/v1/deployments", json=body)
        assert response.status_code == 201, response.text
    pushed = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*holders), 300)
    times = sorted(t - pushed for t in done.values())
    return {
        "connect_s": connect_s,
        "first_s": times[0],
        "p50_s": times[len(times) // 2],
        "all_s": times[-1],
        "conns": conns,  # type: ignore[dict-item]
        "etags": etags,  # type: ignore[dict-item]
    }


async def gc_full_pauses(fleet: FleetProcess) -> dict[str, float]:
    """The fleet's full collections so far (generation 2): count and seconds in all."""
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.token}"},
                                 timeout=300) as client:  # fmt: skip
        text = (await client.get("/metrics")).text
    pauses: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("outpost_fleet_gc_pause_seconds_count", "outpost_fleet_gc_pause_seconds_sum")) \
                and 'generation="2"' in line:  # fmt: skip
            pauses[line.split("{")[0].rsplit("_", 1)[1]] = float(line.split()[-1])
    return pauses


async def all_waiting(client: httpx.AsyncClient, n: int, timeout: float = 300.0) -> None:
    """Until the fleet says every device holds its long-poll (its own gauge), so the push meets them waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = time.monotonic()
        text = (await client.get("/metrics")).text  # a thread-pool route: slow while long-polls still resolve
        waiting = next((float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("outpost_fleet_longpolls_waiting ")), 0.0)  # fmt: skip
        if waiting >= n and time.monotonic() - asked < 0.2:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"the long-polls were not all waiting after {timeout:g} s")


async def watch(url: str, cookie: str, on_event: Callable[[dict[str, Any]], None]) -> None:
    """One browser tab on the console's overview: its live feed (``/console/events``), each event's
    bars handed to ``on_event``, until cancelled."""
    async with (
        httpx.AsyncClient(base_url=url, headers={"Cookie": f"outpost-session={cookie}"}, timeout=None) as client,
        client.stream("GET", "/console/events") as stream,
    ):
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                on_event(json.loads(line[6:]))


def open_tabs(fleet: FleetProcess, count: int, on_event: Callable[[dict[str, Any]], None]) -> list[asyncio.Task[None]]:
    """``count`` signed-in console tabs watching the live feed (cancel the tasks to close them)."""
    logins = [httpx.post(fleet.url + "/login", data={"token": fleet.token}) for _ in range(count)]
    return [asyncio.create_task(watch(fleet.url, r.cookies["outpost-session"], on_event)) for r in logins]


async def open_pool(port: int, size: int = 64) -> tuple[list[Conn], asyncio.Queue[Conn]]:
    """``size`` open keep-alive connections, and a queue that lends them out (the reporting clients)."""
    pool = [Conn(port, {}) for _ in range(size)]
    for conn in pool:
        await conn.open()
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for conn in pool:
        free.put_nowait(conn)
    return pool, free


async def report_load(port: int, credentials: dict[str, str], seconds: float, period: float = 30.0) -> dict[str, float]:
    """Every device reports its $edgeAgent status every ``period`` s (spread evenly); latency per request."""
    rate = len(credentials) / period
    ids = list(credentials)
    latencies: list[float] = []
    pool, free = await open_pool(port)
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        device_id = ids[i % len(ids)]
        conn = await free.get()
        try:
            body = json.dumps({"$edgeAgent": {"lastDesiredStatus": {"code": 200, "description": ""},
                                              "outpost": {"fleetEtag": "x", "n": i}}}).encode()  # fmt: skip
            started = time.perf_counter()
            status, _, _ = await conn.request("PATCH", f"/api/v1/devices/{device_id}/modules/reported", body,
                                              extra=f"Authorization: Bearer {credentials[device_id]}\r\n")  # fmt: skip
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
        finally:
            free.put_nowait(conn)

    tasks = []
    began = time.perf_counter()
    i = 0
    while time.perf_counter() - began < seconds:
        due = began + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
        i += 1
    await asyncio.gather(*tasks)
    for conn in pool:
        conn.close()
    latencies.sort()
    return {
        "rate": rate,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


# -- the bare baseline -----------------------------------------------------------------------

BARE = """
import asyncio, sys
import uvicorn
body = b"x" * int(sys.argv[2])
release = asyncio.Event()
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup": await send({"type": "lifespan.startup.complete"})
            else: await send({"type": "lifespan.shutdown.complete"}); return
    path = scope["path"]
    more = True
    while more:
        m = await receive(); more = m.get("more_body", False)
    if path == "/release":
        release.set()
    elif path == "/wait":
        await release.wait()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", backlog=16384, timeout_keep_alive=75)
"""


async def hold_bare(port: int, n: int) -> tuple[list[Conn], list[asyncio.Task[None]], list[float]]:
    """N connections to the bare app, each holding a request until released (:func:`release_bare`):
    the connections, their tasks and the times their answers arrive."""
    conns = [Conn(port, {}) for _ in range(n)]
    sem = asyncio.Semaphore(200)

    async def opened(conn: Conn) -> None:
        async with sem:
            await conn.open()

    await asyncio.gather(*(opened(c) for c in conns))
    done: list[float] = []

    async def hold(conn: Conn) -> None:
        await conn.request("GET", "/wait")
        done.append(time.perf_counter())

    holders = [asyncio.create_task(hold(c)) for c in conns]
    await asyncio.sleep(min(30.0, 3.0 + n / 1000))
    return conns, holders, done


async def release_bare(port: int) -> float:
    """Answer every held request of the bare app; when that was asked."""
    trigger = Conn(port, {})
    await trigger.open()
    await trigger.request("POST", "/release")
    trigger.close()
    return time.perf_counter()


async def bare_push(port: int, n: int) -> dict[str, float]:
    conns, holders, done = await hold_bare(port, n)
    released = await release_bare(port)
    await asyncio.gather(*holders)
    for conn in conns:
        conn.close()
    return {"all_s": max(done) - released, "p50_s": sorted(done)[n // 2] - released}


async def bare_requests(port: int, n: int, seconds: float) -> dict[str, float]:
    rate = n / 30.0
    _pool, free = await open_pool(port)
    latencies: list[float] = []

    async def one() -> None:
        conn = await free.get()
        try:
            started = time.perf_counter()
            await conn.request("PATCH", "/report", b'{"a": 1}')
            latencies.append(time.perf_counter() - started)
        finally:
            free.put_nowait(conn)

    tasks = []
    began = time.perf_counter()
    i = 0
    while time.perf_counter() - began < seconds:
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
        i += 1
    await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


# -- resolution in process -------------------------------------------------------------------


def resolution(n: int, deployments: int = 50) -> dict[str, float]:
    records = []
    for i in range(deployments):
        layered = i % 5 == 4
        doc = {"modulesContent": {"$edgeAgent": {f"properties.desired.modules.extra{i}": module(order=9)}}} if layered \
            else content(f"d{i}")  # fmt: skip
        condition = "*" if i == 0 else f"tags.site = '{SITES[i % len(SITES)]}' AND tags.ring >= {i % 10}"
        records.append(DeploymentRecord(id=f"d{i:02d}", content=doc["modulesContent"], target=condition,
                                        priority=i, layered=layered, created=now_utc(), seq=i))  # fmt: skip
    twins = [
        device_twin(DeviceRecord(id=f"dev-{i:05d}", tags={"site": SITES[i % len(SITES)], "ring": i % 10}))
        for i in range(n)
    ]
    conditions = [target(r.target) for r in records]
    began = time.perf_counter()
    hits = sum(1 for twin in twins for condition in conditions if condition(twin))
    raw = time.perf_counter() - began
    began = time.perf_counter()
    resolver = Resolver(records)
    assigned = [resolver.assign(str(t["deviceId"]), t, {}) for t in twins]
    full = time.perf_counter() - began
    stacks = {a.stack for a in assigned}
    assert all(a.document is not None for a in assigned)
    return {"raw_conditions_s": raw, "resolve_s": full, "matches": hits, "distinct_stacks": len(stacks)}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (load-independent, unlike wall time)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids(pg_dir: Path | None) -> list[int]:
    """The private cluster's postmaster and its children (backends, WAL writer...)."""
    if pg_dir is None:
        return []
    try:
        master = int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return [master, *children]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_fleet(db: str, n: int, report_seconds: float, watchers: int = 0) -> dict[str, Any]:
    """One fleet process on ``db``: provision N devices, push to all, report load, RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pg_dir = Path(f"/tmp/outpost-pg-bench-{os.getpid()}")  # reachable by the postgres user
        url = None
        if db == "postgresql":
            subprocess.run([str(SCRIPT), "start", str(pg_dir)], check=True, capture_output=True)
            url = fresh_database((pg_dir / "url").read_text().strip())
        fleet = FleetProcess(root / "fleet", url).start()
        try:
            credentials = provision(url or f"sqlite:///{root / 'fleet' / 'fleet.db'}", n)
            with fleet.client() as operator:
                body = {"document": content("base"), "name": "base", "targetCondition": "*", "priority": 1}
                assert operator.post("/api/v1/deployments", json=body).status_code == 201
            return asyncio.run(_push_and_report(fleet, credentials, report_seconds, pg_dir if url else None, watchers))
        finally:
            fleet.stop()
            if db == "postgresql":
                subprocess.run([str(SCRIPT), "stop", str(pg_dir)], check=False, capture_output=True)
                shutil.rmtree(pg_dir, ignore_errors=True)


def wait_http(port: int) -> None:
    """Until the bare app on ``port`` answers (10 s at most)."""
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/x", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)


def run_bare(n: int, body_bytes: int, report_seconds: float) -> dict[str, Any]:
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(body_bytes)])
    try:
        wait_http(port)
        push = asyncio.run(bare_push(port, n))
        cpu = cpu_seconds([bare.pid])
        requests = asyncio.run(bare_requests(port, n, min(report_seconds, 30)))
        requests["cpu_ms"] = 1000 * (cpu_seconds([bare.pid]) - cpu) / requests["requests"]
        return {"push": push, "requests": requests}
    finally:
        bare.terminate()
        bare.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--report-seconds", type=float, default=60.0)
    parser.add_argument(
        "--watchers",
        type=int,
        default=0,
        help="then report again with this many console tabs on the live feed, and again without",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = args.devices
    results: dict[str, Any] = {"devices": n, "cores": os.cpu_count(), "load": os.getloadavg()}
    results["resolution"] = resolution(n)
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for db in dbs:
        results[db] = run_fleet(db, n, args.report_seconds, args.watchers)
    results["bare"] = run_bare(n, results[dbs[0]]["body_bytes"], args.report_seconds)
    results["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    r, bare = results["resolution"], results["bare"]
    print(
        f"{n} simulated devices, {os.cpu_count()} cores, load average {results['load'][0]:.1f} before, "
        f"{results['load_after'][0]:.1f} after"
    )
    print("| measure | " + " | ".join(dbs) + " | bare uvicorn (same machine, same run) |")
    print("|---|" + "---|" * (len(dbs) + 1))
    print(
        "| push to all: every device has the new deployment (s after the push) | "
        + " | ".join(f"{results[d]['all_s']:.2f} (median {results[d]['p50_s']:.2f})" for d in dbs)
        + f" | {bare['push']['all_s']:.2f} (releasing {n} held requests) |"
    )
    rate = results[dbs[0]]["report"]["rate"]
    print(
        f"| device API p50 / p99 (ms), {rate:.0f} reports/s, {n} long-polls held | "
        + " | ".join(f"{results[d]['report']['p50_ms']:.1f} / {results[d]['report']['p99_ms']:.1f}" for d in dbs)
        + f" | {bare['requests']['p50_ms']:.1f} / {bare['requests']['p99_ms']:.1f} |"
    )
    if args.watchers:
        for key, label in (("report_watched", f"with {args.watchers} console tabs on the live feed"),
                           ("report_again", "then without them again")):  # fmt: skip
            print(f"| device API p50 / p99 (ms), {label} | "
                  + " | ".join(f"{results[d][key]['p50_ms']:.1f} / {results[d][key]['p99_ms']:.1f}" for d in dbs)
                  + " | |")  # fmt: skip
        print("live feed events received: " + ", ".join(f"{d} {results[d]['report_watched']['events']}" for d in dbs))
    print(
        "| CPU time per report (ms): fleet process (+ PostgreSQL server) | "
        + " | ".join(f"{results[d]['report']['cpu_ms_fleet']:.2f}"
                     + (f" (+ {results[d]['report']['cpu_ms_db']:.2f})" if d == "postgresql" else "") for d in dbs)
        + f" | {bare['requests']['cpu_ms']:.2f} |"
    )  # fmt: skip
    print(
        f"| fleet RSS idle / with {n} devices connected (MB) | "
        + " | ".join(f"{results[d]['rss_idle_mb']:.0f} / {results[d]['rss_mb']:.0f}" for d in dbs)
        + " | |"
    )
    print(
        f"| resolution of {n} devices x 50 deployments (s, in process) | {r['resolve_s']:.3f} "
        f"({r['distinct_stacks']} stacks) | | raw: {n * 50:,} condition calls {r['raw_conditions_s']:.3f} |"
    )
    for d in dbs:
        rep = results[d]["report"]
        print(
            f"{d}: {rep['requests']} reports, {rep['errors']} errors, max {rep['max_ms']:.0f} ms; "
            f"connect {results[d]['connect_s']:.1f} s; first device {results[d]['first_s']:.2f} s after the push; "
            f"full GC pauses {results[d]['gc_full'].get('count', 0):.0f} taking "
            f"{results[d]['gc_full'].get('sum', 0) * 1000:.0f} ms in all, "
            f"{results[d]['gc_full_report'].get('count', 0):.0f} taking "
            f"{results[d]['gc_full_report'].get('sum', 0) * 1000:.0f} ms while reporting"
        )


async def _push_and_report(
    fleet: FleetProcess, credentials: dict[str, str], seconds: float, pg_dir: Path | None, watchers: int = 0
) -> dict[str, Any]:
    assert fleet.process is not None
    idle = rss_mb(fleet.process.pid)
    push = await push_to_all(fleet.port, credentials, fleet.token)
    conns: dict[str, Conn] = push.pop("conns")  # type: ignore[assignment]
    etags: dict[str, str] = push.pop("etags")  # type: ignore[assignment]
    # the devices hold their long-polls again while they report
    holders = [
        asyncio.create_task(
            conns[d].request("GET", f"/api/v1/devices/{d}/deployment?wait=300", extra=f"If-None-Match: {etags[d]}\r\n")
        )
        for d in conns
    ]
    async with httpx.AsyncClient(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.token}"},
                                 timeout=300) as client:  # fmt: skip
        await all_waiting(client, len(conns))
    push["rss_mb"] = rss_mb(fleet.process.pid)
    push["rss_idle_mb"] = idle
    sample = next(iter(credentials))
    one = Conn(fleet.port, {"Authorization": f"Bearer {credentials[sample]}"})
    await one.open()
    _, _, body = await one.request("GET", f"/api/v1/devices/{sample}/deployment")
    push["body_bytes"] = len(body)
    one.close()
    before = await gc_full_pauses(fleet)
    fleet_cpu, db_cpu = cpu_seconds([fleet.process.pid]), cpu_seconds(postgres_pids(pg_dir))
    push["report"] = await report_load(fleet.port, credentials, seconds)
    reports = push["report"]["requests"]
    push["report"]["cpu_ms_fleet"] = 1000 * (cpu_seconds([fleet.process.pid]) - fleet_cpu) / reports
    push["report"]["cpu_ms_db"] = 1000 * (cpu_seconds(postgres_pids(pg_dir)) - db_cpu) / reports
    pauses = await gc_full_pauses(fleet)
    push["gc_full_report"] = {k: v - before.get(k, 0.0) for k, v in pauses.items()}
    push["gc_full"] = pauses
    if watchers:  # the same load with console tabs on the live feed, then without them again
        events = [0]
        tabs = open_tabs(fleet, watchers, lambda _bars: events.__setitem__(0, events[0] + 1))
        push["report_watched"] = await report_load(fleet.port, credentials, seconds)
        push["report_watched"]["events"] = events[0]
        for tab in tabs:
            tab.cancel()
        await asyncio.gather(*tabs, return_exceptions=True)
        push["report_again"] = await report_load(fleet.port, credentials, seconds)
    for task in holders:
        task.cancel()
    for conn in conns.values():
        conn.close()
    return push


if __name__ == "__main__":
    main()
