"""The agent's composition root: runtime, state dir, module environment, metrics and the
source of deployments, put together in one place (as ``hub/service.py`` does for the hub).

The CLI only parses options and calls this. Where deployments come from is a seam:
``ManifestSource``: a file, or the fleet link (:mod:`outpost.agent.fleet_link`, ``fleet_link``). Only this
module and ``agent.adapters`` know which runtime implementations exist.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outpost.agent.adapters import make_runtime
from outpost.agent.adapters.host_probes import HostProbes
from outpost.agent.diagnostics import Probes
from outpost.agent.environment import HubAddress, ModuleEnvironment, default_device_id
from outpost.agent.fleet_link import FleetLink, FleetSettings, LinkSettings
from outpost.agent.metrics import AgentMetrics
from outpost.agent.reconciler import Reconciler
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.state import RUNTIME_FILE, RuntimeRecord, StateDir
from outpost.errors import ManifestError
from outpost.manifest import parse_json
from outpost.trust.admission import Admission
from outpost.trust.store import TrustStore

__all__ = [
    "AgentService",
    "AgentSettings",
    "FileSource",
    "FleetSettings",
    "ManifestSource",
    "NoSource",
    "attach",
    "compose",
    "host_probes",
    "runtime_of",
]

log = logging.getLogger("outpost.agent")


class ManifestSource(Protocol):
    """Where the running agent gets deployments: polled every round; None when there is nothing
    (new) to say or it cannot be read, and the stored deployment keeps running."""

    name: str  # names the deployments it yields (``NAME@hash``)

    def __call__(self) -> dict[str, Any] | None: ...


class FileSource:
    """A manifest file, read afresh on every poll (an edit is a new deployment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.stem

    def __call__(self) -> dict[str, Any] | None:
        try:
            doc = parse_json(self.path.read_bytes())
        except (OSError, ManifestError) as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return None
        return doc if isinstance(doc, dict) else None


class NoSource:
    """No outside source: keep the stored deployment (offline first)."""

    name = "deployment"

    def __call__(self) -> dict[str, Any] | None:
        return None


@dataclass
class AgentSettings:
    """What ``outpost agent apply|run`` is told; defaults suit a device."""

    state_dir: Path
    runtime: str = "auto"  # docker, process, or auto
    namespace: str = "default"
    workdir: Path | None = None  # base of relative process working dirs [default: the current directory]
    device_id: str | None = None
    hub: HubAddress = field(default_factory=HubAddress)


def _accepted(state: StateDir) -> list[dict[str, Any]]:
    """The documents this device accepted (desired and last known good): admission refuses overrides
    older than theirs."""
    return [d.document for d in (state.desired(), state.last_known_good()) if d is not None]


def compose(state: StateDir, runtime: ContainerRuntime, **kw: Any) -> Reconciler:
    """A reconciler whose modules get this device's identity and hub address (from the runtime record),
    admitting only content the device's trust store allows (``trust.admission``)."""
    record = state.runtime_record() or RuntimeRecord()
    env = ModuleEnvironment(record.device, record.hub, key_root=state.path.parent, agent_state=state.path.resolve())
    kw.setdefault("admit", Admission(TrustStore.of_state_dir(state.path), device_id=record.device,
                                     accepted=lambda: _accepted(state)))  # fmt: skip
    return Reconciler(runtime, state, module_env=env, **kw)


def attach(state_dir: Path) -> tuple[StateDir, ContainerRuntime, RuntimeRecord] | None:
    """The runtime a running (or last run) agent uses, for list/logs/restart/watch; None when no
    agent ever ran with this state dir. ``ModuleRuntimeError`` when the runtime cannot be reached."""
    if not (state_dir / RUNTIME_FILE).exists():
        return None
    state = StateDir(state_dir)
    record = state.runtime_record() or RuntimeRecord()
    return state, runtime_of(state, record), record


def runtime_of(state: StateDir | Path, record: RuntimeRecord | None = None) -> ContainerRuntime:
    """The runtime ``record`` (default: the state dir's, else auto) names; ``ModuleRuntimeError`` if unreachable.

    ``state`` may be the path of a state dir that does not exist yet (``outpost check`` never creates it).
    """
    if isinstance(state, StateDir):
        record = record or state.runtime_record()
        state = state.path
    record = record or RuntimeRecord()
    return make_runtime(record.kind, state_dir=state, namespace=record.namespace, workdir=record.workdir)


def host_probes() -> Probes:
    """This machine's probes for ``outpost check`` (broker port, clock sync)."""
    return HostProbes()


class AgentService:
    """One agent: builds its runtime and records it in the state dir, then applies or runs."""

    def __init__(self, settings: AgentSettings, **reconciler_kw: Any) -> None:
        self.settings = settings
        self.state = StateDir(settings.state_dir)
        workdir = (settings.workdir or Path.cwd()).resolve()
        self.runtime = make_runtime(
            settings.runtime, state_dir=self.state.path, namespace=settings.namespace, workdir=workdir
        )
        self.state.set_runtime_record(
            RuntimeRecord(
                kind=self.runtime.kind, namespace=settings.namespace, workdir=workdir,
                device_id=settings.device_id or default_device_id(), hub=settings.hub,
            )
        )  # fmt: skip
        self.metrics: AgentMetrics = reconciler_kw.pop("metrics", None) or AgentMetrics()
        self.reconciler = compose(self.state, self.runtime, metrics=self.metrics, **reconciler_kw)

    def serve_metrics(self, port: int) -> None:
        """Prometheus metrics on 127.0.0.1:``port``; ``OSError`` when the port is taken."""
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)

    def fleet_link(self, fleet: FleetSettings, *, hub_twins: Path | None = None) -> FleetLink:
        """The link to a fleet (``agent run --fleet``): a ManifestSource that also reports; ``start`` it."""
        from outpost.agent.adapters.fleet_api import ActivatingApi

        device_id = self.settings.device_id or default_device_id()
        api = ActivatingApi(fleet, device_id, self.state.path)
        twins = hub_twins or self.state.path.parent / "hub" / "twins"
        return FleetLink(api, LinkSettings(device_id, self.state.path, hub_twins=twins), status=self.state.status)

    def run(self, stop: threading.Event, source: ManifestSource | None = None, *, interval: float = 5.0) -> None:
        """Keep the device converged until ``stop`` (see ``Reconciler.run``)."""
        source = source or NoSource()
        self.reconciler.run(stop, source=source, name=source.name, interval=interval)
