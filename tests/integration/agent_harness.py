"""Builders for agent integration tests: manifests of ``behave`` modules and a local device.

The same manifest runs on both runtimes: ``settings.image`` names the test image (Docker) and
``outpost.process.command`` runs the same program as a process.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outpost.agent.adapters import make_runtime
from outpost.agent.observed import Observed
from outpost.agent.reconciler import ApplyResult, Reconciler
from outpost.agent.state import StateDir

BEHAVE = Path(__file__).resolve().parents[1] / "images" / "behave" / "behave.py"
IMAGE = "outpost-test/behave:1"


def module(
    *,
    order: int = 1,
    policy: str = "always",
    status: str = "running",
    env: dict[str, str] | None = None,
    health_file: Path | None = None,
    cool_off: float = 0.2,
    binds: list[str] | None = None,
    image: str = IMAGE,
) -> dict[str, Any]:
    """One module entry of ``$edgeAgent.modules``."""
    ext: dict[str, Any] = {
        "process": {"command": [sys.executable, str(BEHAVE)]},
        "restart": {"coolOffSecs": cool_off, "maxBackoffSecs": 2},
    }
    if health_file is not None:
        ext["health"] = {
            "command": ["test", "-f", str(health_file)],
            "intervalSecs": 0.3,
            "timeoutSecs": 2,
            "retries": 2,
        }
    create = {"HostConfig": {"NetworkMode": "none", "Binds": binds or []}}
    return {
        "version": "1.0",
        "type": "docker",
        "status": status,
        "restartPolicy": policy,
        "startupOrder": order,
        "imagePullPolicy": "never",
        "settings": {"image": image, "createOptions": json.dumps(create)},
        "env": {key: {"value": value} for key, value in (env or {}).items()},
        "outpost": ext,
    }


def manifest(
    modules: dict[str, dict[str, Any]], *, window: float = 1.0, hub: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A whole manifest; the edgeHub slot runs a ``behave`` module too."""
    hub = hub or module(order=0)
    hub.pop("version", None)
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "outpost/edge-agent:0.1.0"}},
                        "edgeHub": hub,
                    },
                    "modules": modules,
                    "outpost": {"rollback": {"enabled": True, "healthWindowSecs": window}},
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {},
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 60},
                }
            },
        }
    }


class Device:
    """A local device: one runtime in its own namespace, a state dir and a reconciler."""

    def __init__(self, kind: str, root: Path, namespace: str) -> None:
        self.root = root
        self.kind = kind
        self.namespace = namespace
        self.state = StateDir(root / "state")
        self.runtime = make_runtime(kind, state_dir=self.state.path, namespace=namespace, workdir=root)
        self.state.write("runtime.json", {"kind": kind, "namespace": namespace, "workdir": str(root)})
        self.reconciler = Reconciler(self.runtime, self.state, poll_secs=0.05)

    def apply(self, doc: dict[str, Any], **kw: Any) -> ApplyResult:
        kw.setdefault("timeout", 60)
        return self.reconciler.apply(doc, **kw)

    def tick(self) -> None:
        """One reconcile round of the stored deployment, as the running agent would do."""
        stored = self.state.desired()
        assert stored is not None
        self.reconciler.reconcile(self.reconciler.desired_from(stored))

    def observe(self) -> Observed:
        return self.runtime.observe()

    def running(self) -> dict[str, str]:
        """Running modules by name -> id."""
        return {name: m.id for name, m in self.observe().modules.items() if m.running}

    def cleanup(self) -> None:
        for name, state in self.observe().modules.items():
            self.runtime.remove(name, state.id)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy; bounded, with a message that says what was awaited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def marks(path: Path) -> list[tuple[str, int, float]]:
    """Lines ``name pid time`` the behave modules appended at each start."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, pid, when = line.split()
        rows.append((name, int(pid), float(when)))
    return rows
