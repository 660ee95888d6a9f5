"""Records the fleet keeps: devices, module twins, deployments and the push history.

Plain frozen dataclasses so the pure parts (resolution, status, queries) never see the
database; :mod:`outpost.fleet.adapters.database` maps them to tables.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["CountRow", "DeploymentRecord", "DeviceRecord", "DeviceStatus", "HistoryEntry", "ModuleTwin", "now_utc"]


def now_utc() -> str:
    """ISO 8601 UTC with microseconds: sorts as text in both databases."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DeviceStatus(enum.StrEnum):
    """IoT Hub's device ``status``: a disabled device is refused on every call."""

    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True)
class DeviceRecord:
    """One device: its identity, tags, device-level twin properties and credential state."""

    id: str
    tags: dict[str, Any] = field(default_factory=dict)
    status: DeviceStatus = DeviceStatus.ENABLED
    activated: bool = False
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    created: str = ""
    last_activity: str | None = None


@dataclass(frozen=True)
class ModuleTwin:
    """A module twin on one device (``$edgeAgent``, ``$edgeHub`` or a module).

    ``desired`` holds what an operator set on this device's module directly; the deployment's
    desired properties are merged under it when the device fetches its deployment.
    ``desired_signatures`` sign ``desired`` at ``desired_version`` for this device and module
    (``outpost device twin --sign-key``); any unsigned change clears them.
    """

    device_id: str
    module_id: str
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 0
    reported_version: int = 0
    desired_signatures: list[dict[str, str]] = field(default_factory=list)  # the operator's (trust.overrides)


@dataclass(frozen=True)
class DeploymentRecord:
    """A stored deployment. ``content`` (modulesContent) never changes; the rest may."""

    id: str
    content: dict[str, Any]
    target: str
    priority: int = 0
    layered: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    created: str = ""
    created_by: str = ""
    seq: int = 0
    content_hash: str = ""
    signatures: list[dict[str, str]] = field(default_factory=list)  # the operator's, over the content (trust.parts)

    def summary(self) -> dict[str, Any]:
        """Azure's configuration shape without the content (``deploy list``)."""
        return {
            "id": self.id,
            "targetCondition": self.target,
            "priority": self.priority,
            "layered": self.layered,
            "labels": dict(self.labels),
            "metrics": {"queries": dict(self.metrics)},
            "createdTimeUtc": self.created,
            "createdBy": self.created_by,
            "contentHash": self.content_hash,
        }

    def document(self) -> dict[str, Any]:
        """Azure's whole configuration document (``deploy show``)."""
        signed = {"signatures": list(self.signatures)} if self.signatures else {}
        return {**self.summary(), "content": {"modulesContent": self.content}, **signed}


@dataclass(frozen=True)
class HistoryEntry:
    """Who did what to which deployment, and when (``deploy history``)."""

    seq: int
    at: str
    actor: str
    action: str
    deployment_id: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "deploymentId": self.deployment_id,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class CountRow:
    """One device as one deployment's status counts it (stored only for targeted or applied devices).

    ``state`` is ``success``, ``failed`` or ``pending`` (meaningful when ``applied``), with the
    agent's code and reason. Computed by :func:`outpost.fleet.status.device_rows`.
    """

    deployment_id: str
    device_id: str
    targeted: bool
    applied: bool
    state: str = "pending"
    code: int | None = None
    reason: str = ""
