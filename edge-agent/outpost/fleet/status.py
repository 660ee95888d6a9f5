"""A deployment's status in IoT Hub's terms, counted from the devices' twins.

* ``targetedCount``: devices whose twin matches the target condition;
* ``appliedCount``: devices whose effective deployment includes it (it won on priority, or
  it is a layer on top);
* ``reportedSuccessfulCount`` / ``reportedFailedCount``: of those, devices whose ``$edgeAgent``
  reported properties describe the device's *current* assignment (``outpost.fleetEtag``) with
  ``lastDesiredStatus.code`` 200 (and no longer converging), or with an error code;
  failing devices are listed with the agent's description;
* ``metrics.queries`` (:mod:`outpost.fleet.queries`) over the targeted devices.

Counting is incremental: each device's :class:`CountRow` per deployment (targeted, applied,
outcome) is computed here by :func:`device_rows` whenever the device, its module twins or the
deployments change, and stored; a status reads the rows of one deployment (and, for custom
metrics, the targeted devices' twins). Called by :mod:`outpost.fleet.service`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outpost.errors import QueryError
from outpost.fleet.models import CountRow, DeploymentRecord
from outpost.fleet.queries import compile_query
from outpost.fleet.resolution import Assignment

__all__ = ["DeviceView", "Outcome", "custom_metrics", "deployment_status", "device_rows", "outcome", "status_document"]

AGENT = "$edgeAgent"
UNKNOWN = 406  # Azure's "not known yet" (the agent is converging): not a failure


@dataclass(frozen=True)
class DeviceView:
    """One device as status counting sees it."""

    twin: Mapping[str, Any]
    modules: Sequence[Mapping[str, Any]]
    assignment: Assignment


@dataclass(frozen=True)
class Outcome:
    """``success``, ``failed`` or ``pending``, and why."""

    state: str
    code: int | None = None
    reason: str = ""


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def outcome(view: DeviceView) -> Outcome:
    """How the device's agent reports on its current assignment."""
    if view.assignment.problems:
        first = view.assignment.problems[0]
        return Outcome("failed", 400, f"effective manifest is invalid: {first}")
    agent = next((m for m in view.modules if m.get("moduleId") == AGENT), None)
    reported: Mapping[str, Any] = agent["properties"]["reported"] if agent else {}
    link = _section(reported, "outpost")
    if link.get("fleetEtag") != view.assignment.etag:
        return Outcome("pending", reason="the device has not reported on this deployment yet")
    status = _section(reported, "lastDesiredStatus")
    code = status.get("code")
    description = str(status.get("description") or "")
    if link.get("converging") or code == UNKNOWN:
        return Outcome("pending", code if isinstance(code, int) else None, description or "converging")
    if code == 200:
        return Outcome("success", 200, description)
    if isinstance(code, int) and code >= 400:
        return Outcome("failed", code, description or f"lastDesiredStatus.code {code}")
    return Outcome("pending", code if isinstance(code, int) else None, description or "converging")


def device_rows(view: DeviceView, targeted: Sequence[str]) -> list[CountRow]:
    """The rows of one device: every deployment that targets it or is applied to it."""
    result = outcome(view) if view.assignment.stack else Outcome("pending")
    device_id = view.assignment.device_id
    stack = set(view.assignment.stack)
    return [
        CountRow(deployment_id, device_id, deployment_id in targeted, True, result.state, result.code, result.reason)
        if deployment_id in stack
        else CountRow(deployment_id, device_id, True, False)
        for deployment_id in sorted(set(targeted) | stack)
    ]


def custom_metrics(record: DeploymentRecord, targeted: Sequence[DeviceView]) -> dict[str, Any]:
    """``metrics.queries`` evaluated over the targeted devices."""
    custom: dict[str, Any] = {}
    for name, text in sorted(record.metrics.items()):
        try:
            query = compile_query(text)
        except QueryError as exc:  # stored before a rule tightened: report, never fail the status
            custom[name] = {"query": text, "error": str(exc)}
            continue
        selected = query.devices((v.twin, v.modules) for v in targeted)
        custom[name] = {"query": text, "count": len(selected), "devices": sorted(selected)}
    return custom


def deployment_status(
    record: DeploymentRecord, views: Sequence[DeviceView], targeted: Sequence[bool]
) -> dict[str, Any]:
    """The status document of one deployment counted from every device at once (the reference for the rows)."""
    rows = [
        row
        for view, hit in zip(views, targeted, strict=True)
        for row in device_rows(view, [record.id] if hit else [])
        if row.deployment_id == record.id
    ]
    targeted_views = [v for v, hit in zip(views, targeted, strict=True) if hit]
    return status_document(record, rows, custom_metrics(record, targeted_views))


def status_document(record: DeploymentRecord, rows: Sequence[CountRow], custom: dict[str, Any]) -> dict[str, Any]:
    """The status document of one deployment (``outpost deploy status``) from its stored rows."""
    successful = sorted(r.device_id for r in rows if r.applied and r.state == "success")
    failing = [{"deviceId": r.device_id, "code": r.code, "reason": r.reason}
               for r in rows if r.applied and r.state == "failed"]  # fmt: skip
    pending = sorted(r.device_id for r in rows if r.applied and r.state not in ("success", "failed"))
    return {
        "id": record.id,
        "targetCondition": record.target,
        "priority": record.priority,
        "layered": record.layered,
        "systemMetrics": {
            "targetedCount": sum(1 for r in rows if r.targeted),
            "appliedCount": sum(1 for r in rows if r.applied),
            "reportedSuccessfulCount": len(successful),
            "reportedFailedCount": len(failing),
        },
        "customMetrics": custom,
        "failing": sorted(failing, key=lambda f: f["deviceId"]),
        "pending": pending,
        "successful": successful,
    }
