"""Edge hub benchmark: routed module -> hub -> module vs plain Mosquitto pass-through.

Run: ``scripts/bench hub`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_hub.py --json``).
In one run, on 127.0.0.1, with 90-byte JSON bodies:
- baseline: one paho publisher -> Mosquitto -> one paho subscriber at QoS 1 (no hub);
- routed: an SDK module -> the hub (stored durably in SQLite, fsync per batch) -> an SDK module,
  end to end acknowledged, counted at the receiver; with the SDK's batch PUBLISHes (the default)
  and with them turned off (``max_batch=1``: one PUBLISH per message both ways);
- latency p50/p99 at a steady 1,000 msg/s through the hub (send to handler), both ways;
- the hub's RSS after the runs (it runs as its own process, ``outpost hub run``), and while a
  backlog of ``--backlog`` messages builds up for a module that is offline (memory must not follow
  the backlog: it is on disk).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from integration.conftest_mosquitto import free_port
from integration.hub_harness import ALPHA_TO_BETA, DEVICE, hub_manifest
from outpost.sdk import InputMessage, ModuleClient
from outpost.wire.credentials import device_key, module_password

BODY = json.dumps({"deviceID": "motor-1", "temperature": 61.5, "current": 4.2, "vibration": 0.31}).encode()[:90]


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def raw_passthrough(n: int, root: Path) -> float:
    """msgs/s of paho QoS 1 publisher -> Mosquitto -> subscriber (anonymous, own broker)."""
    port = free_port()
    conf = root / "raw.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\n"
    )
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        done = threading.Event()
        count = [0]

        def on_message(*_: Any) -> None:
            count[0] += 1
            if count[0] >= n:
                done.set()

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe("bench/t", qos=1)
        sub.loop_start()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        time.sleep(0.5)
        began = time.perf_counter()
        for _ in range(n):
            while len(pub._out_messages) > 5000:
                time.sleep(0.001)
            pub.publish("bench/t", BODY, qos=1)
        done.wait(300)
        elapsed = time.perf_counter() - began
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
        return n / elapsed
    finally:
        broker.terminate()
        broker.wait()


class _Hub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "m.json").write_text(json.dumps(hub_manifest(ALPHA_TO_BETA)))
        exe = Path(sys.executable).parent / "outpost"
        args = [str(exe), "hub", "run", "--manifest", str(root / "m.json"), "--state-dir", str(root / "hub"),
                "--device-id", DEVICE, "--port", str(self.port), "--metrics-port", "0"]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)
        time.sleep(1.0)

    def client(self, name: str, **kw: Any) -> ModuleClient:
        password = module_password(device_key(self.root), name)
        return ModuleClient(device_id=DEVICE, module_id=name, password=password, port=self.port, **kw)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def routed(hub: _Hub, n: int, **client_kw: Any) -> float:
    got = threading.Event()
    count = [0]

    def handler(_message: InputMessage) -> None:
        count[0] += 1
        if count[0] >= n:
            got.set()

    beta = hub.client("beta", **client_kw)
    beta.on_input("in", handler)
    beta.connect(timeout=30)
    alpha = hub.client("alpha", max_outbox=n + 10, **client_kw)
    alpha.connect(timeout=30)
    began = time.perf_counter()
    for _ in range(n):
        alpha.send("out", BODY, content_type="application/json")
    got.wait(600)
    elapsed = time.perf_counter() - began
    alpha.close()
    beta.close()
    return n / elapsed


def latency(hub: _Hub, rate: int, seconds: float, **client_kw: Any) -> tuple[float, float]:
    """p50/p99 ms from send() to the receiving handler, at a steady ``rate``."""
    samples: list[float] = []
    lock = threading.Lock()

    def handler(message: InputMessage) -> None:
        if "t" not in message.properties:
            return  # a redelivery left over from the throughput run
        sent = float(message.properties["t"])
        with lock:
            samples.append((time.perf_counter() - sent) * 1000)

    beta = hub.client("beta", **client_kw)
    beta.on_input("in", handler)
    beta.connect(timeout=30)
    alpha = hub.client("alpha", **client_kw)
    alpha.connect(timeout=30)
    total = int(rate * seconds)
    began = time.perf_counter()
    for i in range(total):
        due = began + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        alpha.send("out", BODY, {"t": repr(time.perf_counter())}, content_type="application/json")
    deadline = time.monotonic() + 60
    while len(samples) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    alpha.close()
    beta.close()
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def backlog_rss(hub: _Hub, total: int, steps: int = 4) -> list[tuple[int, float]]:
    """(queued messages, hub RSS MB) while ``total`` messages queue up for an offline beta."""
    alpha = hub.client("alpha", max_outbox=total + 10, send_timeout=120.0)
    alpha.connect(timeout=30)
    points = [(0, hub.rss_mb())]
    try:
        for step in range(1, steps + 1):
            for _ in range(total // steps):
                alpha.send("out", BODY, content_type="application/json")
            alpha.flush(timeout=600)  # receipted: on disk in the hub
            points.append((step * (total // steps), hub.rss_mb()))
    finally:
        alpha.close()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs of each kind (median reported)")
    parser.add_argument("--backlog", type=int, default=200_000, help="messages queued for an offline module")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    single = {"max_batch": 1}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raws = [raw_passthrough(args.messages, root) for _ in range(args.repeats)]
        hub = _Hub(root)
        try:
            batched = [routed(hub, args.messages) for _ in range(args.repeats)]
            singles = [routed(hub, args.messages, **single) for _ in range(args.repeats)]
            p50, p99 = latency(hub, rate=1000, seconds=10)
            p50_single, p99_single = latency(hub, rate=1000, seconds=10, **single)
            rss = hub.rss_mb()
            backlog = backlog_rss(hub, args.backlog)
        finally:
            hub.stop()
    raw, ours, ours_single = statistics.median(raws), statistics.median(batched), statistics.median(singles)
    summary = {
        "messages": args.messages,
        "repeats": args.repeats,
        "raw_qos1_msgs_per_s": round(raw),
        "routed_msgs_per_s": round(ours),
        "routed_vs_raw": round(ours / raw, 2),
        "routed_single_msgs_per_s": round(ours_single),
        "routed_single_vs_raw": round(ours_single / raw, 2),
        "latency_p50_ms_at_1000": round(p50, 2),
        "latency_p99_ms_at_1000": round(p99, 2),
        "latency_single_p50_ms_at_1000": round(p50_single, 2),
        "latency_single_p99_ms_at_1000": round(p99_single, 2),
        "hub_rss_mb": round(rss, 1),
        "backlog_rss_mb": [[queued, round(mb, 1)] for queued, mb in backlog],
        "runs": {"raw": [round(x) for x in raws], "routed": [round(x) for x in batched],
                 "routed_single": [round(x) for x in singles]},
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    s = summary
    print(f"| measurement ({args.messages:,} messages of {len(BODY)} bytes, median of {args.repeats}) | value |")
    print("|---|---:|")
    print(f"| baseline: paho -> Mosquitto -> paho, QoS 1 | {s['raw_qos1_msgs_per_s']:,} msg/s |")
    print(f"| module -> hub (stored) -> module, end-to-end acked | {s['routed_msgs_per_s']:,} msg/s |")
    print(f"| routed / raw | {s['routed_vs_raw']} |")
    print(f"| same, batches off (`max_batch=1`) | {s['routed_single_msgs_per_s']:,} msg/s |")
    print(f"| routed with batches off / raw | {s['routed_single_vs_raw']} |")
    print(f"| latency p50 / p99 at 1,000 msg/s | {s['latency_p50_ms_at_1000']} / {s['latency_p99_ms_at_1000']} ms |")
    print(f"| same, batches off | {s['latency_single_p50_ms_at_1000']} / {s['latency_single_p99_ms_at_1000']} ms |")
    print(f"| hub RSS after the runs above | {s['hub_rss_mb']} MB |")
    trail = ", ".join(f"{queued:,}: {mb} MB" for queued, mb in s["backlog_rss_mb"])
    print(f"| hub RSS while a backlog builds up for an offline module (queued: RSS) | {trail} |")
    print(f"| runs (msg/s): raw / routed / batches off | {s['runs']} |")


if __name__ == "__main__":
    main()
