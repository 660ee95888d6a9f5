"""Benchmark of `outpost build`: a cold three-platform build and push of reference modules against the
same work done by hand with plain sequential commands, and the no-change rebuild.

Run: ``.venv/bin/python tests/bench/bench_build.py [--modules alert-actuator,motor-sensor] [--json]``
(as root: it starts QEMU emulation, base images and a registry on 127.0.0.1 with htpasswd auth).

* ``outpost build``: ``outpost build MODULES --push REGISTRY`` with an empty work dir: wheelhouses
  filled from PyPI, BuildKit builds (modules in parallel, ``--jobs 2``), smoke tests, pushes, a
  manifest list per module.
* ``baseline``: what a user writes by hand, one module and platform after the other: ``pip download``
  the module's wheels for that platform into its context, ``docker build --platform`` (BuildKit),
  ``docker push``; then the manifest lists through the registry API (no smoke tests).
* ``no-change rebuild``: ``outpost build`` again, nothing changed (wall time of the command).

Both cold runs start from their own copy of the modules with a unique line in requirements.txt, so
neither reuses the other's (or an earlier run's) BuildKit layers for the expensive steps; base images
and the pip download cache are warm for both.

The machine is shared: for each side the bench samples the 1-minute load average every 2 s and
reads the CPU time Docker's containers and builds used (cgroup v1 ``cpuacct`` of ``docker``; other
users' containers count too), and it splits each side's time into its steps (outpost build's
``phases`` from its --json; the baseline's pip, build and push).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
OUTPOST = Path(sys.executable).parent / "outpost"
DOCKER = "/usr/bin/docker"
USER = "bench"
PLATFORMS = {"linux/amd64": "amd64", "linux/arm64": "arm64v8", "linux/arm/v7": "arm32v7"}
BASES = {
    "linux/amd64": "outpost/base:bookworm-amd64",
    "linux/arm64": "outpost/base:bookworm-arm64",
    "linux/arm/v7": "outpost/base:bookworm-armhf",
}
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l"}
DOCKER_CPU = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")  # ns, containers and BuildKit steps


@contextmanager
def conditions(into: dict[str, float]) -> Iterator[None]:
    """Mean and max of the 1-minute load average, and Docker's CPU seconds, while the block runs."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2.0):
            samples.append(os.getloadavg()[0])

    cpu0 = int(DOCKER_CPU.read_text()) if DOCKER_CPU.exists() else None
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        samples = samples or [os.getloadavg()[0]]
        into["load_mean"] = round(sum(samples) / len(samples), 1)
        into["load_max"] = round(max(samples), 1)
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        # the side's own processes (outpost, pip, docker clients); the builds themselves run in Docker
        into["client_cpu_s"] = round(own.ru_utime + own.ru_stime - own0.ru_utime - own0.ru_stime, 1)
        if cpu0 is not None:
            into["docker_cpu_s"] = round((int(DOCKER_CPU.read_text()) - cpu0) / 1e9, 1)


def sh(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(root: Path, password: str) -> tuple[subprocess.Popen[bytes], str]:
    sh("htpasswd", "-Bbc", str(root / "htpasswd"), USER, password)
    port = free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: bench\n    path: {root / 'htpasswd'}\n"
    )
    server = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    address = f"127.0.0.1:{port}"
    for _ in range(150):
        try:
            if requests.get(f"http://{address}/v2/", auth=(USER, password), timeout=2).status_code == 200:
                return server, address
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit("registry did not start")


def copy_modules(modules: list[str], dest: Path, repo_prefix: str) -> None:
    marker = uuid.uuid4().hex
    for name in modules:
        target = dest / name
        shutil.copytree(REPO / "modules" / name, target, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
        spec = json.loads((target / "module.json").read_text())
        spec["image"]["repository"] = f"{repo_prefix}/{name}"
        (target / "module.json").write_text(json.dumps(spec, indent=2))
        with (target / "requirements.txt").open("a") as f:
            f.write(f"# bench run {marker}\n")  # new COPY layer: the pip install below it is not cached


def outpost_build(
    modules_dir: Path, work: Path, address: str, password: str, sdk: Path, *, steps: dict[str, float] | None = None
) -> float:
    env = {**os.environ, "OUTPOST_REGISTRY_USERNAME": USER, "OUTPOST_REGISTRY_PASSWORD": password}
    started = time.monotonic()
    out = sh(
        str(OUTPOST),
        "build",
        "--modules-dir",
        str(modules_dir),
        "--work-dir",
        str(work),
        "--push",
        address,
        "--sdk-wheel",
        str(sdk),
        "--json",
        env=env,
    )
    seconds = time.monotonic() - started
    if steps is not None:  # summed over images: modules build in parallel, so these add up to more than the wall time
        doc = json.loads(out)
        steps["wheels (before any build)"] = doc.get("wheels_seconds", 0.0)
        for image in doc["images"]:
            emulated = "emulated" if image["platform"] != "linux/amd64" else "native"
            for phase, value in image.get("phases", {}).items():
                name = f"{phase} ({emulated})" if phase in ("build", "smoke") else phase
                steps[name] = round(steps.get(name, 0.0) + value, 1)
    return seconds


def baseline(
    modules_dir: Path, modules: list[str], sdk: Path, address: str, password: str, *, steps: dict[str, float]
) -> float:
    """By hand: per module and platform, pip download, docker build, docker push; then the lists."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": str(modules_dir / ".docker")}
    started = time.monotonic()
    login = subprocess.run(
        [DOCKER, "login", "--username", USER, "--password-stdin", address],
        input=password,
        text=True,
        capture_output=True,
        env=env,
        check=False,
    )
    if login.returncode != 0:
        raise SystemExit(f"docker login failed: {login.stderr}")
    digests: dict[str, list[tuple[str, str]]] = {}
    for name in modules:
        ctx = modules_dir / name
        repo = f"{address}/bench-baseline/{name}"
        for platform, key in PLATFORMS.items():
            if key == "arm32v7" and name == "anomaly-detector":
                continue
            wheels = ctx / "wheels"
            shutil.rmtree(wheels, ignore_errors=True)
            wheels.mkdir()
            machine = MACHINES[platform]
            tags = [f"--platform=manylinux_2_{m}_{machine}" for m in range(36, 16, -1)]
            reqs = [line.split("#")[0].strip() for line in (ctx / "requirements.txt").read_text().splitlines()]
            reqs = [r for r in reqs if r and not (machine == "armv7l" and r.startswith("numpy"))]
            reqs = [r.split(";")[0].strip() for r in reqs]
            t0 = time.monotonic()
            sh(
                *pip,
                "download",
                "--quiet",
                "-d",
                str(wheels),
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                *tags,
                f"--platform=manylinux2014_{machine}",
                *reqs,
            )
            shutil.copy2(sdk, wheels / sdk.name)
            tag = f"{repo}:0.1.0-{key}"
            t1 = time.monotonic()
            sh(
                DOCKER,
                "build",
                "--network",
                "none",
                "--platform",
                platform,
                "--build-arg",
                f"BASE={BASES[platform]}",
                "-t",
                tag,
                str(ctx),
                env=env,
            )
            t2 = time.monotonic()
            sh(DOCKER, "push", tag, env=env)
            emulated = "emulated" if platform != "linux/amd64" else "native"
            for step, value in (
                ("pip download", t1 - t0),
                (f"build ({emulated})", t2 - t1),
                ("push", time.monotonic() - t2),
            ):
                steps[step] = round(steps.get(step, 0.0) + value, 1)
            response = requests.head(
                f"http://{address}/v2/bench-baseline/{name}/manifests/0.1.0-{key}",
                auth=(USER, password),
                timeout=30,
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            )
            digests.setdefault(name, []).append(
                (platform, response.headers["Docker-Content-Digest"] + " " + response.headers["Content-Length"])
            )
        manifests = []
        for platform, info in digests[name]:
            digest, size = info.split()
            os_, arch, *variant = platform.split("/")
            entry = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
            manifests.append(
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": digest,
                    "size": int(size),
                    "platform": entry,
                }
            )
        body = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": manifests,
                "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            }
        )
        put = requests.put(
            f"http://{address}/v2/bench-baseline/{name}/manifests/0.1.0",
            data=body,
            auth=(USER, password),
            timeout=30,
            headers={"Content-Type": "application/vnd.docker.distribution.manifest.list.v2+json"},
        )
        put.raise_for_status()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default="alert-actuator,motor-sensor")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline-first", action="store_true", help="run the baseline before outpost build")
    args = parser.parse_args()
    modules = [m for m in args.modules.split(",") if m]
    for script in ("docker.sh", "qemu.sh", "base-images.sh", "registry.sh"):
        sh("bash", str(REPO / "scripts/services" / script))
    password = "pw-" + uuid.uuid4().hex
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        root = Path(tmp)
        (root / "reg").mkdir()
        server, address = start_registry(root / "reg", password)
        try:
            ours, theirs = root / "ours", root / "theirs"
            copy_modules(modules, ours, "bench-outpost")
            copy_modules(modules, theirs, "bench-baseline")
            from outpost.builder.adapters.pip_wheels import sdk_wheel

            sdk = sdk_wheel(REPO, root / "sdk")
            ours_seen: dict[str, float] = {}
            theirs_seen: dict[str, float] = {}
            ours_steps: dict[str, float] = {}
            theirs_steps: dict[str, float] = {}

            def run_ours() -> float:
                with conditions(ours_seen):
                    return outpost_build(ours, root / "work", address, password, sdk, steps=ours_steps)

            def run_theirs() -> float:
                with conditions(theirs_seen):
                    return baseline(theirs, modules, sdk, address, password, steps=theirs_steps)

            if args.baseline_first:
                base = run_theirs()
                cold = run_ours()
            else:
                cold = run_ours()
                base = run_theirs()
            warm = []
            for _ in range(3):
                warm.append(outpost_build(ours, root / "work", address, password, sdk))
        finally:
            server.terminate()
            server.wait(timeout=10)
    images = sum(2 if m == "anomaly-detector" else 3 for m in modules)
    result: dict[str, Any] = {
        "modules": modules,
        "images": images,
        "outpost_cold_s": round(cold, 1),
        "baseline_s": round(base, 1),
        "ratio": round(cold / base, 2),
        "no_change_rebuild_s": round(min(warm), 2),
        "no_change_rebuild_runs_s": [round(w, 2) for w in warm],
        "load_average_at_start": round(load, 1),
        "outpost_conditions": ours_seen,
        "baseline_conditions": theirs_seen,
        "outpost_steps_s": ours_steps,
        "baseline_steps_s": theirs_steps,
        "order": "baseline first" if args.baseline_first else "outpost build first",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"modules: {', '.join(modules)} ({images} images, 3 platforms, pushed to a local registry)")
    print(f"{'run':<34}{'seconds':>10}")
    print(f"{'outpost build (cold)':<34}{cold:>10.1f}")
    print(f"{'baseline: sequential by hand':<34}{base:>10.1f}")
    print(f"{'outpost build / baseline':<34}{cold / base:>10.2f}")
    print(f"{'no-change rebuild (best of 3)':<34}{min(warm):>10.2f}")
    print(f"load average at start: {load:.1f} ({os.cpu_count()} cores shared); order: {result['order']}")
    for side, seen, steps in (("outpost build", ours_seen, ours_steps), ("baseline", theirs_seen, theirs_steps)):
        cpu = f", CPU: Docker {seen['docker_cpu_s']:.0f} s" if "docker_cpu_s" in seen else ", CPU:"
        cpu += f" + own processes {seen['client_cpu_s']:.0f} s"
        print(f"{side}: load mean {seen['load_mean']:.1f} (max {seen['load_max']:.1f}){cpu}")
        print("  steps (summed over images): " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))


if __name__ == "__main__":
    main()
