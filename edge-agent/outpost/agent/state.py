"""The agent's state directory: the deployment it works toward, the last known good one,
restart records and the reported status, each written atomically.

Offline first: after a reboot with no network, ``last-known-good.json`` alone is enough for
the agent to bring the device back. Atomic = write a temporary file, fsync it, rename it
over the old one, fsync the directory; a crash at any instant leaves either the old or the
new file, never a torn one. Used by the reconciler and by the local CLI (``outpost list``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.agent.environment import HubAddress, default_device_id
from outpost.agent.restarts import RestartRecord
from outpost.errors import InputError
from outpost.files import write_atomic

__all__ = ["DEFAULT_STATE_DIR", "RuntimeRecord", "StateDir", "StoredDeployment", "deployment_hash", "image_pins"]

DEFAULT_STATE_DIR = Path(os.environ.get("OUTPOST_STATE_DIR", "/var/lib/outpost/agent"))


RUNTIME_FILE = "runtime.json"  # the RuntimeRecord


def deployment_hash(document: dict[str, Any]) -> str:
    """Content hash of a manifest document (key order does not matter)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class StoredDeployment:
    """A manifest document as the agent keeps it, with its id and a local version number."""

    id: str
    version: int
    document: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "document": self.document}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredDeployment:
        return cls(id=str(data["id"]), version=int(data["version"]), document=dict(data["document"]))


@dataclass(frozen=True)
class RuntimeRecord:
    """How this agent runs modules (``runtime.json``): written by ``outpost agent apply|run``, read
    by ``outpost list|logs|restart|watch`` so they attach to the same runtime, device and hub."""

    kind: str = "auto"
    namespace: str = "default"
    workdir: Path | None = None
    device_id: str = ""  # empty: ``default_device_id()``
    hub: HubAddress = field(default_factory=HubAddress)

    @property
    def device(self) -> str:
        return self.device_id or default_device_id()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "namespace": self.namespace, "workdir": str(self.workdir) if self.workdir else None,
            "deviceId": self.device_id, "hub": str(self.hub),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeRecord:
        """Fields a record lacks (older agents, test harnesses) take their defaults."""
        try:
            hub = HubAddress.parse(str(data["hub"])) if data.get("hub") else HubAddress()
        except InputError:
            hub = HubAddress()
        return cls(
            kind=str(data.get("kind") or "auto"), namespace=str(data.get("namespace") or "default"),
            workdir=Path(data["workdir"]) if data.get("workdir") else None, device_id=str(data.get("deviceId") or ""),
            hub=hub,
        )  # fmt: skip


def image_pins(state_dir: Path) -> dict[str, str]:
    """``StateDir.image_pins`` without creating the state dir (the Docker runtime reads it on every observe)."""
    try:
        data = json.loads((state_dir / "image-pins.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class StateDir:
    """One agent's files. Creating it creates the directory (mode 0700: it may hold credentials)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- atomic JSON files -------------------------------------------------------------------

    def write(self, name: str, data: Any) -> None:
        write_atomic(self.path / name, json.dumps(data, indent=2, sort_keys=True), 0o600, sync_dir=True)

    def read(self, name: str) -> Any | None:
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # A file we did not write (atomic writes never tear): keep it for inspection, start clean.
            (self.path / name).replace(self.path / f"{name}.corrupt")
            return None

    # -- what is stored ----------------------------------------------------------------------

    def desired(self) -> StoredDeployment | None:
        data = self.read("deployment.json")
        return StoredDeployment.from_json(data) if data else None

    def set_desired(self, deployment: StoredDeployment) -> None:
        self.write("deployment.json", deployment.to_json())

    def last_known_good(self) -> StoredDeployment | None:
        data = self.read("last-known-good.json")
        return StoredDeployment.from_json(data) if data else None

    def set_last_known_good(self, deployment: StoredDeployment) -> None:
        self.write("last-known-good.json", deployment.to_json())

    def next_version(self) -> int:
        current = self.desired()
        return (current.version + 1) if current else 1

    def restarts(self) -> dict[str, RestartRecord]:
        data = self.read("restarts.json") or {}
        return {
            name: RestartRecord(count=int(rec.get("count", 0)), last_restart=rec.get("lastRestart"))
            for name, rec in data.items()
        }

    def set_restarts(self, records: dict[str, RestartRecord]) -> None:
        data = {name: {"count": r.count, "lastRestart": r.last_restart} for name, r in sorted(records.items())}
        if data != (self.read("restarts.json") or {}):
            self.write("restarts.json", data)

    def image_history(self) -> dict[str, list[str]]:
        """Images each module has used, oldest first (for pruning)."""
        data = self.read("images.json") or {}
        return {str(k): [str(i) for i in v] for k, v in data.items()}

    def set_image_history(self, history: dict[str, list[str]]) -> None:
        if history != self.image_history():
            self.write("images.json", history)

    def image_pins(self) -> dict[str, str]:
        """Digest references (``name@sha256:…``) this engine cannot resolve by itself, mapped to the local
        image id they name: Docker 20.10 drops repository digests on ``docker load``, so ``outpost bundle
        apply`` records here which loaded image each digest of the signed bundle is (the Docker runtime
        then runs that image id). Read on every observe; tiny."""
        return image_pins(self.path)

    def pin_images(self, pins: dict[str, str]) -> None:
        if pins and {**self.image_pins(), **pins} != self.image_pins():
            self.write("image-pins.json", {**self.image_pins(), **pins})

    def failures(self) -> dict[str, Any]:
        """Failed commands waiting to run again (``failures.Failures`` as JSON)."""
        data = self.read("failures.json")
        return data if isinstance(data, dict) else {}

    def set_failures(self, data: dict[str, Any]) -> None:
        if data != self.failures():
            self.write("failures.json", data)

    def request_retry(self, module: str, at: float) -> None:
        """Ask the running agent to retry ``module``'s failed commands now (``outpost restart``)."""
        requests = self.retry_requests()
        requests[module] = at
        self.write("retry.json", requests)

    def retry_requests(self) -> dict[str, float]:
        """Module -> when a retry was asked for; the agent drops failures older than that."""
        data = self.read("retry.json")
        if not isinstance(data, dict):
            return {}
        return {str(m): float(t) for m, t in data.items() if isinstance(t, int | float)}

    def runtime_record(self) -> RuntimeRecord | None:
        """The runtime the agent last ran with; None before the first ``outpost agent apply|run``."""
        data = self.read(RUNTIME_FILE)
        return RuntimeRecord.from_json(data) if isinstance(data, dict) else None

    def set_runtime_record(self, record: RuntimeRecord) -> None:
        self.write(RUNTIME_FILE, record.to_json())

    def status(self) -> dict[str, Any] | None:
        data = self.read("status.json")
        return data if isinstance(data, dict) else None

    def set_status(self, status: dict[str, Any]) -> None:
        self.write("status.json", status)
