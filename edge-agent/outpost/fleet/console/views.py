"""What each console page shows, computed through :class:`~outpost.fleet.service.FleetService`.

The same service calls and the same authorisation as the HTTP API: a page is a different
rendering of the API's documents, never a second query implementation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from outpost.fleet.console.plots import ordered
from outpost.fleet.credentials import Principal
from outpost.fleet.rollout.driver import RolloutDriver
from outpost.fleet.service import SYSTEM_MODULES, FleetService

__all__ = [
    "ONLINE_SECONDS",
    "STATES",
    "DeviceIndex",
    "DeviceQuery",
    "connection",
    "convergence",
    "deployment_page",
    "device_list",
    "device_page",
    "flatten",
    "metric_summary",
    "overview",
    "rollout_page",
]

ONLINE_SECONDS = 300.0
"""A device that called within this many seconds is online."""
SERIES_DAYS = 7
"""The device page plots the reported numbers of this many days (what the series table keeps)."""
AGENT = "$edgeAgent"
MODULES_PATH = "properties.desired.modules."


def connection(twin: Mapping[str, Any], now: datetime | None = None) -> str:
    """``online``, ``offline`` or ``never`` (never seen)."""
    seen = twin.get("lastActivityTime")
    if not seen:
        return "never"
    at = datetime.strptime(str(seen), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - at).total_seconds()
    return "online" if age <= ONLINE_SECONDS else "offline"


def convergence(service: FleetService, who: Principal, *, recount: bool = True) -> dict[str, dict[str, int]]:
    """Every deployment's system metrics (what the overview's bars and their live updates show).

    ``recount=False`` (the live feed): the rows as they are, so the bars fill in as the background
    recount after a change goes, and the feed never queues behind it."""
    return service.system_metrics(who, recount=recount)


def overview(
    service: FleetService, who: Principal, bars: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, Any]:
    """Connection counts per group (all devices, and each deployment's target) and every deployment's bar.

    ``bars``: convergence computed already (the live feed's latest), else computed here.
    """
    since = (datetime.now(UTC) - timedelta(seconds=ONLINE_SECONDS)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    deployments = service.deployments(who)
    everyone, targeted = service.connections(who, since)  # counted rows: a deployment's targeted devices
    groups = [{"name": "all devices", "target": "*", "counts": everyone}]
    seen = {"*"}
    none = {"online": 0, "offline": 0, "never": 0}
    for record in deployments:
        if record.target in seen:
            continue
        seen.add(record.target)
        groups.append({"name": record.target, "target": record.target, "counts": targeted.get(record.id, none)})
    if bars is None or set(bars) != {d.id for d in deployments}:
        bars = convergence(service, who)
    return {
        "groups": groups,
        "deployments": [{"record": d, "metrics": bars[d.id]} for d in deployments],
    }


@dataclass(frozen=True)
class DeviceQuery:
    """One page of the device list: ``text`` is ``key=value`` (the tag ``key`` whose value contains
    ``value``) or anything else (the id or a tag contains it); ``state`` one of :data:`STATES` or ``""``."""

    text: str = ""
    state: str = ""
    offset: int = 0
    limit: int = 50
    online_since: str = ""
    """Devices seen at or after this time (``lastActivityTime`` format) are online."""


STATES = ("online", "offline", "never", "enabled", "disabled")


class DeviceIndex(Protocol):
    """The device list's search, done by the database (a page of 10,000 devices reads one page).
    Implemented by :class:`outpost.fleet.adapters.console_store.SqlConsoleStore`."""

    def search_devices(self, query: DeviceQuery) -> tuple[int, list[dict[str, Any]]]: ...


def device_list(
    index: DeviceIndex, who: Principal, *, query: str = "", state: str = "", page: int = 1, per_page: int = 50
) -> dict[str, Any]:
    """One page of the devices whose id or tags match ``query``, in ``state``, sorted by id."""
    who.require_operator()
    if state not in STATES:
        state = ""
    now = datetime.now(UTC)
    since = datetime.fromtimestamp(now.timestamp() - ONLINE_SECONDS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    wanted = DeviceQuery(query.strip(), state, 0, per_page, since)
    total, twins = index.search_devices(replace(wanted, offset=(max(page, 1) - 1) * per_page))
    pages = max(1, -(-total // per_page))
    if page > pages:  # past the end: show the last page
        page = pages
        total, twins = index.search_devices(replace(wanted, offset=(page - 1) * per_page))
    rows = [{"twin": twin, "connection": connection(twin, now)} for twin in twins]
    return {"rows": rows, "total": total, "page": max(page, 1), "pages": pages, "query": query, "state": state}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; twin bookkeeping (``$version``, ``$metadata``) left out."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if str(key).startswith("$") and str(key) in {"$version", "$metadata"}:
            continue
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _origins(service: FleetService, who: Principal, stack: Iterable[str]) -> dict[str, str]:
    """Module name → the deployment of the stack that last set it (base or layer)."""
    origin: dict[str, str] = {}
    for deployment_id in stack:
        record = service.deployment(who, deployment_id)
        agent = record.content.get(AGENT, {})
        desired = agent.get("properties.desired", {})
        for name in (desired.get("modules") or {}) if isinstance(desired, Mapping) else {}:
            origin[str(name)] = deployment_id
        for key in agent:
            if key.startswith(MODULES_PATH):
                origin[key[len(MODULES_PATH) :].split(".", 1)[0]] = deployment_id
    return origin


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def device_page(service: FleetService, who: Principal, device_id: str) -> dict[str, Any]:
    """Tags, connection, the effective deployment with each module's origin, runtime status, twins."""
    twin = service.twin(who, device_id)
    assignment = service.assignment(who, device_id)
    origins = _origins(service, who, assignment.stack)
    twins = twin.get("modules") or {}
    agent_reported = (twins.get(AGENT) or {}).get("properties", {}).get("reported", {})
    runtime = agent_reported.get("modules") or {}
    manifest_modules: dict[str, Any] = {}
    if assignment.document is not None:
        desired = assignment.document.get("modulesContent", {}).get(AGENT, {}).get("properties.desired", {})
        manifest_modules = dict(desired.get("modules") or {})
    names = sorted(set(manifest_modules) | set(runtime))
    modules = []
    for name in names:
        state = runtime.get(name) or {}
        modules.append(
            {
                "name": name,
                "origin": origins.get(name, ""),
                "image": ((manifest_modules.get(name) or {}).get("settings") or {}).get("image", ""),
                "runtimeStatus": state.get("runtimeStatus", "not reported"),
                "restartCount": state.get("restartCount", 0),
                "lastError": state.get("lastError") or state.get("statusDescription") or "",
                "exitCode": state.get("exitCode"),
            }
        )
    comparisons = []
    for module_id, module in sorted(twins.items()):
        if module_id in SYSTEM_MODULES:  # desired: the deployment shown above; reported: runtime state, not an echo
            reported_only = flatten(module["properties"]["reported"])
            rows = [{"path": p, "desired": "", "reported": _show(v), "differs": False} for p, v in
                    sorted(reported_only.items())]  # fmt: skip
            comparisons.append({"module": module_id, "rows": rows})
            continue
        desired = flatten(module["properties"]["desired"])
        if assignment.document is not None:
            from_deployment = assignment.document.get("modulesContent", {}).get(module_id, {})
            desired = {**flatten(from_deployment.get("properties.desired", {})), **desired}
        reported = flatten(module["properties"]["reported"])
        rows = [
            {
                "path": path,
                "desired": _show(desired[path]) if path in desired else "",
                "reported": _show(reported[path]) if path in reported else "",
                "differs": path in desired and desired.get(path) != reported.get(path),
            }
            for path in sorted(set(desired) | set(reported))
        ]
        comparisons.append({"module": module_id, "rows": rows})
    last_status = agent_reported.get("lastDesiredStatus") or {}
    return {
        "twin": twin,
        "connection": connection(twin),
        "assignment": assignment,
        "modules": modules,
        "comparisons": comparisons,
        "lastDesiredStatus": last_status,
    }


def deployment_page(service: FleetService, who: Principal, deployment_id: str) -> dict[str, Any]:
    record = service.deployment(who, deployment_id)
    return {
        "record": record,
        "content": json.dumps(record.content, indent=2, sort_keys=True),
        "status": service.status(who, deployment_id),
        "history": [entry.as_dict() for entry in service.history(who, deployment_id)],
    }


def metric_summary(series: Mapping[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    """Each reported metric's latest value, when, and how many points the plot has (the plot's legend as text)."""
    return [
        {
            "name": name,
            "last": series[name][-1][1],
            "at": datetime.fromtimestamp(series[name][-1][0], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "points": len(series[name]),
        }
        for name in ordered(list(series))
    ]


def rollout_page(driver: RolloutDriver, who: Principal, name: str) -> dict[str, Any]:
    """A rollout's status document (step, cohorts, devices per model, gates) as ``outpost rollout status`` has it."""
    status = driver.status(who, name)
    last = status.get("last") or {}
    started = float(status.get("stepStarted") or 0.0)
    return {
        "rollout": status,
        "gates": list(last.get("gates") or []),
        "verdict": last.get("verdict", "not evaluated yet"),
        "stepStarted": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if started else "",
        "failure": status.get("failure"),
    }
