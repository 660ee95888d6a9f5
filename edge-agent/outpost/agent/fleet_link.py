"""The device's link to the fleet: fetch the effective deployment, report what the device does.

Two loops on their own threads, both offline first:

* **fetch** holds a long-poll by ETag (``GET .../deployment?wait=S`` with ``If-None-Match``), so a
  push reaches a connected device within a second or so. Each new assignment is written to
  ``STATE/fleet/assignment.json`` before the reconciler sees it (:meth:`FleetLink.source` is the
  agent's ``ManifestSource``), so a reboot without network resumes from it; the reconciler keeps
  its own last known good deployment anyway.
* **report** collects the agent's status document (``$edgeAgent`` reported properties, with the
  ETag it describes as ``outpost.fleetEtag``) and every module's reported properties (the hub's
  twin files) into an outbox in the state dir: one document per module, the newest wins, so it
  never grows beyond the modules the device runs. It sends the difference from what the fleet
  acknowledged, and keeps everything when the fleet is away.

Failures back off with jitter (:class:`outpost.backoff.Backoff`), so devices that lost the fleet
together do not return together. Built by :mod:`outpost.agent.service`; the HTTP client is
:mod:`outpost.wire.adapters.fleet_http` behind :class:`FleetApi`.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outpost import __version__
from outpost.agent.state import deployment_hash
from outpost.backoff import Backoff
from outpost.files import write_atomic
from outpost.wire.fleet import FleetCallError, Unreachable

__all__ = ["AGENT", "DEVICE", "FleetApi", "FleetLink", "FleetSettings", "LinkSettings", "Outbox", "top_level_diff"]

log = logging.getLogger("outpost.agent.fleet")

AGENT = "$edgeAgent"
DEVICE = "$device"  # the outbox's key for device-level reported properties
SOURCE_NAME = "fleet"


class FleetApi(Protocol):
    """The device side of the fleet's API (the HTTP adapter implements it)."""

    def fetch_deployment(self, device_id: str, etag: str | None, wait: float) -> tuple[str, dict[str, Any] | None]: ...
    def report_modules(self, device_id: str, patches: Mapping[str, Mapping[str, Any]]) -> None: ...
    def report_device(self, device_id: str, patch: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class FleetSettings:
    """Where the fleet is and how this device proves who it is."""

    url: str
    activation_key: str | None = None
    credential_file: Path | None = None
    ca_file: Path | None = None


@dataclass(frozen=True)
class LinkSettings:
    device_id: str
    state_dir: Path  # the agent's state dir; the link keeps its files in ./fleet
    hub_twins: Path | None = None  # the hub's twin files (reported-MODULE.json)
    wait: float = 50.0  # long-poll length; below any proxy's idle timeout
    report_every: float = 2.0
    backoff: Backoff = field(default_factory=lambda: Backoff(first=1.0, cap=60.0, jitter=0.5))


def top_level_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A twin patch from ``old`` to ``new``: changed top-level keys, removed ones as ``null``."""
    patch = {key: value for key, value in new.items() if old.get(key, object()) != value}
    patch.update({key: None for key in old if key not in new})
    return patch


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("fleet link: %s is unreadable; starting it afresh", path)
        return None


def _write(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True), 0o600, sync_dir=True)


class Outbox:
    """Reported documents not yet acknowledged by the fleet, coalesced per module, kept on disk.

    ``pending`` holds the newest full document of each module; ``acked`` what the fleet has.
    Only the difference is sent; a document equal to what the fleet has is dropped.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.Lock()
        self.pending: dict[str, dict[str, Any]] = _read(directory / "outbox.json") or {}
        self.acked: dict[str, dict[str, Any]] = _read(directory / "acked.json") or {}

    def put(self, module: str, document: Mapping[str, Any]) -> None:
        with self._lock:
            document = dict(document)
            if self.acked.get(module) == document:
                if self.pending.pop(module, None) is not None:
                    _write(self.dir / "outbox.json", self.pending)
                return
            if self.pending.get(module) != document:
                self.pending[module] = document
                _write(self.dir / "outbox.json", self.pending)

    def patches(self) -> dict[str, dict[str, Any]]:
        """What to send now: module -> patch (may be empty for nothing)."""
        with self._lock:
            return {
                module: patch
                for module, document in self.pending.items()
                if (patch := top_level_diff(self.acked.get(module, {}), document))
            }

    def sent(self, snapshot: Mapping[str, dict[str, Any]]) -> None:
        """The fleet acknowledged the documents of ``snapshot`` (module -> full document)."""
        with self._lock:
            for module, document in snapshot.items():
                self.acked[module] = document
                if self.pending.get(module) == document:
                    del self.pending[module]
            _write(self.dir / "acked.json", self.acked)
            _write(self.dir / "outbox.json", self.pending)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {module: dict(document) for module, document in self.pending.items()}

    def __len__(self) -> int:
        return len(self.pending)


class FleetLink:
    """Fetches this device's deployment and reports its state; see the module docstring."""

    name = SOURCE_NAME

    def __init__(
        self,
        api: FleetApi,
        settings: LinkSettings,
        *,
        status: Callable[[], dict[str, Any] | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings
        self.dir = settings.state_dir / "fleet"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()
        self.assignment: dict[str, Any] = _read(self.dir / "assignment.json") or {}
        self.outbox = Outbox(self.dir)
        self.connected = threading.Event()
        self.fetch_failures = 0
        self.report_failures = 0
        self.last_error = ""
        self._threads: list[threading.Thread] = []

    # -- the reconciler's side -----------------------------------------------------------------

    def __call__(self) -> dict[str, Any] | None:
        """The agent's ManifestSource: the manifest of the newest assignment, or None (keep running)."""
        with self._lock:
            manifest = self.assignment.get("manifest")
        return manifest if isinstance(manifest, dict) else None

    @property
    def etag(self) -> str | None:
        with self._lock:
            etag = self.assignment.get("etag")
        return etag if isinstance(etag, str) else None

    # -- fetching ------------------------------------------------------------------------------

    def fetch_once(self, wait: float) -> bool:
        """One long-poll; True when a new assignment arrived. FleetCallError when it failed."""
        etag, assignment = self.api.fetch_deployment(self.settings.device_id, self.etag, wait)
        self.connected.set()
        if assignment is None:
            return False
        manifest = assignment.get("manifest")
        record = {
            "etag": etag,
            "deployments": assignment.get("deployments", []),
            "manifest": manifest,
            "hash": deployment_hash(manifest) if isinstance(manifest, dict) else None,
            "problems": assignment.get("problems", []),
            "receivedAt": time.time(),
        }
        _write(self.dir / "assignment.json", record)
        with self._lock:
            self.assignment = record
        if assignment.get("problems"):
            log.error("fleet link: the fleet cannot compose this device's deployment: %s", assignment["problems"])
        else:
            log.info("fleet link: new deployment %s (etag %s)", ", ".join(record["deployments"]) or "none", etag)
        return True

    def _fetch_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.fetch_once(self.settings.wait)
                self.fetch_failures = 0
            except FleetCallError as exc:
                self._failed(exc, "fetch")
                self.fetch_failures += 1
                stop.wait(self.settings.backoff.delay(self.fetch_failures))

    def _failed(self, exc: FleetCallError, what: str) -> None:
        self.connected.clear()
        text = str(exc)
        if text != self.last_error:  # once per cause, not once per retry
            level = logging.WARNING if isinstance(exc, Unreachable) else logging.ERROR
            log.log(level, "fleet link: %s failed: %s; keeping the current deployment and retrying", what, text)
            self.last_error = text

    # -- reporting -----------------------------------------------------------------------------

    def collect(self) -> None:
        """Put the agent's status and every module's reported properties in the outbox."""
        status = self._status()
        if status is not None:
            self.outbox.put(AGENT, self._agent_document(status))
        twins = self.settings.hub_twins
        if twins is not None and twins.is_dir():
            for path in sorted(twins.glob("reported-*.json")):
                document = _read(path)
                if isinstance(document, dict):
                    self.outbox.put(path.stem.removeprefix("reported-"), document)
        self.outbox.put(
            DEVICE,
            {"arch": platform.machine(), "os": platform.system().lower(), "agentVersion": __version__},
        )

    def _agent_document(self, status: Mapping[str, Any]) -> dict[str, Any]:
        document = dict(status)
        ext = dict(document.get("outpost") or {})
        ext.pop("reportedAtUtc", None)  # changes every round; would make every report a new document
        applied = str(ext.get("deploymentId") or "")
        with self._lock:
            current = self.assignment
        name, _, digest = applied.rpartition("@")
        ext["fleetEtag"] = current.get("etag") if name == SOURCE_NAME and digest == current.get("hash") else None
        document["outpost"] = ext
        return document

    def report_once(self) -> int:
        """Send what the fleet does not have yet; the number of documents sent. FleetCallError if it failed."""
        snapshot = self.outbox.snapshot()
        patches = self.outbox.patches()
        if not patches:
            return 0
        device = patches.pop(DEVICE, None)
        if device is not None:
            self.api.report_device(self.settings.device_id, device)
        if patches:
            self.api.report_modules(self.settings.device_id, patches)
        self.outbox.sent({m: snapshot[m] for m in (*patches, *([DEVICE] if device is not None else []))})
        return len(patches) + (device is not None)

    def _report_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.settings.report_every
            try:
                self.collect()
                self.report_once()
                self.report_failures = 0
            except FleetCallError as exc:
                self._failed(exc, "report")
                self.report_failures += 1
                delay = max(delay, self.settings.backoff.delay(self.report_failures))
            except OSError as exc:
                log.warning("fleet link: cannot keep reported properties in %s: %s", self.dir, exc)
            stop.wait(delay)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> None:
        for target, name in ((self._fetch_loop, "fetch"), (self._report_loop, "report")):
            thread = threading.Thread(target=target, args=(stop,), name=f"outpost-fleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
