"""Edge agent benchmark: apply vs bare ``docker run``, no-op reconcile cost, agent RSS.

Run: ``scripts/bench agent`` (or ``PYTHONPATH=tests .venv/bin/python tests/bench/bench_agent.py --json``).
It needs the Docker engine and the test images (``scripts/bench`` prepares them, as the tests do).
Everything runs on this machine; containers use ``--network none``.

In one run it measures, for the same 6 containers of ``outpost-test/behave:1``:
- bare baseline 1: ``docker run -d`` six times (Debian's CLI, sequential);
- bare baseline 2: docker SDK create+start six times (no CLI process start-up);
- ``Reconciler.apply`` of a 6-module manifest from nothing, health window 0 (time to converge);
- the cost of one no-op reconcile round on the converged device (median of many);
- resident memory of ``outpost agent run`` keeping the 6 modules converged.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker

from integration.agent_harness import IMAGE, Device, manifest, module
from outpost.agent.adapters import make_runtime

DOCKER_CLI = "/usr/bin/docker"
MODULES = 6


def _cleanup(client: docker.DockerClient, label: str) -> None:
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)


def bare_cli(client: docker.DockerClient) -> float:
    label = f"outpost.bench={uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    for i in range(MODULES):
        subprocess.run(
            [
                DOCKER_CLI,
                "run",
                "-d",
                "--network",
                "none",
                "--label",
                label,
                "--name",
                f"bench-cli-{i}-{label[-8:]}",
                IMAGE,
            ],
            check=True,
            capture_output=True,
        )
    elapsed = time.perf_counter() - began
    _cleanup(client, label)
    return elapsed


def bare_sdk(client: docker.DockerClient) -> float:
    label = f"outpost.bench={uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    for i in range(MODULES):
        container = client.containers.create(
            IMAGE, name=f"bench-sdk-{i}-{label[-8:]}", network_mode="none", labels={"outpost.bench": label[-8:]}
        )
        container.start()
    elapsed = time.perf_counter() - began
    _cleanup(client, label)
    return elapsed


def agent_apply(root: Path) -> tuple[float, float, Device]:
    device = Device("docker", root, f"bench{uuid.uuid4().hex[:6]}")
    doc = manifest({f"m{i}": module(order=1) for i in range(MODULES - 1)}, window=1.0)
    began = time.perf_counter()
    result = device.reconciler.apply(doc, health_window=0.0, timeout=120)
    elapsed = time.perf_counter() - began
    assert result.converged, result.description
    stored = device.state.desired()
    assert stored is not None
    desired = device.reconciler.desired_from(stored)
    rounds = []
    for _ in range(50):
        t0 = time.perf_counter()
        round_ = device.reconciler.reconcile(desired)
        rounds.append(time.perf_counter() - t0)
        assert not round_.plan
    return elapsed, statistics.median(rounds), device


def agent_rss(root: Path, runtime: str) -> float:
    """VmRSS (MB) of `outpost agent run` once its 6 modules are converged."""
    ns = f"rss{uuid.uuid4().hex[:6]}"
    path = root / f"rss-{runtime}.json"
    path.write_text(json.dumps(manifest({f"m{i}": module(order=1) for i in range(MODULES - 1)}, window=0.5)))
    exe = Path(sys.executable).parent / "outpost"
    state = root / f"state-{runtime}"
    args = [str(exe), "agent", "run", "--manifest", str(path), "--state-dir", str(state), "--runtime", runtime,
            "--namespace", ns, "--metrics-port", "0", "--interval", "1"]  # fmt: skip
    agent = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = json.loads((state / "status.json").read_text()) if (state / "status.json").exists() else {}
            if status.get("lastDesiredStatus", {}).get("code") == 200:
                break
            time.sleep(0.2)
        time.sleep(3)  # a few steady rounds
        for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        leftover = make_runtime(runtime, state_dir=state, namespace=ns)
        for name, module_state in leftover.observe().modules.items():
            leftover.remove(name, module_state.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    client = docker.from_env()
    results: dict[str, Any] = {"cli": [], "sdk": [], "apply": [], "noop": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare_cli(client)  # warm the engine and page cache
        for i in range(args.repeats):
            results["cli"].append(bare_cli(client))
            results["sdk"].append(bare_sdk(client))
            applied, noop, device = agent_apply(root / f"r{i}")
            results["apply"].append(applied)
            results["noop"].append(noop)
            device.cleanup()
        rss_docker = agent_rss(root, "docker")
        rss_process = agent_rss(root, "process")
    client.close()
    med = {key: statistics.median(values) for key, values in results.items()}
    summary = {
        "modules": MODULES,
        "repeats": args.repeats,
        "bare_docker_run_s": round(med["cli"], 3),
        "bare_sdk_create_start_s": round(med["sdk"], 3),
        "agent_apply_s": round(med["apply"], 3),
        "apply_vs_docker_run": round(med["apply"] / med["cli"], 2),
        "apply_vs_sdk": round(med["apply"] / med["sdk"], 2),
        "noop_reconcile_ms": round(med["noop"] * 1000, 2),
        "agent_rss_mb_docker": round(rss_docker, 1),
        "agent_rss_mb_process": round(rss_process, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"| measurement ({MODULES} containers, median of {args.repeats}) | value |")
    print("|---|---:|")
    print(f"| bare `docker run -d` x{MODULES} (CLI) | {summary['bare_docker_run_s']} s |")
    print(f"| bare SDK create+start x{MODULES} | {summary['bare_sdk_create_start_s']} s |")
    print(f"| `outpost` apply from nothing (to converged) | {summary['agent_apply_s']} s |")
    print(f"| apply / bare docker run | {summary['apply_vs_docker_run']}x |")
    print(f"| apply / bare SDK | {summary['apply_vs_sdk']}x |")
    print(f"| no-op reconcile round | {summary['noop_reconcile_ms']} ms |")
    print(f"| `outpost agent run` RSS, Docker runtime | {summary['agent_rss_mb_docker']} MB |")
    print(f"| `outpost agent run` RSS, process runtime | {summary['agent_rss_mb_process']} MB |")


if __name__ == "__main__":
    main()
