"""Who may download which model: the device route of the registry and the tokens it accepts.

``GET /api/v1/devices/{id}/models/{name}/{version}/content`` serves a device the models its own
deployment names, to the device's credential (its agent) or to the model token the fleet stamped
into that deployment (its module; see :mod:`outpost.fleet.rollout.tokens`), and to operators. The
registry's own route serves a device credential the same models only. Used by the HTTP adapter
(:mod:`outpost.fleet.adapters.rollout_api`) and the long-poll route, which serves every assignment
through :meth:`ModelAccess.stamp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ForbiddenError, UnauthorizedError
from outpost.fleet.models import DeviceStatus
from outpost.fleet.resolution import Assignment
from outpost.fleet.rollout.registry import ModelRegistry
from outpost.fleet.rollout.store import ModelRecord
from outpost.fleet.rollout.tokens import DESIRED, TOKEN_PREFIX, registry_ref, stamp, token_matches
from outpost.fleet.service import FleetService

__all__ = ["ModelAccess"]


def _names(document: Mapping[str, Any] | None, base_url: str, record: ModelRecord) -> bool:
    """Does this manifest give some module exactly this model (name, version and sha256)?"""
    content = document.get("modulesContent") if isinstance(document, Mapping) else None
    for entry in content.values() if isinstance(content, Mapping) else ():
        desired = entry.get(DESIRED) if isinstance(entry, Mapping) else None
        model = desired.get("model") if isinstance(desired, Mapping) else None
        if not isinstance(model, Mapping) or not isinstance(model.get("url"), str):
            continue
        sha = model.get("sha256")
        if registry_ref(model["url"], base_url) == (record.name, record.version) and (
            isinstance(sha, str) and sha.lower() == record.sha256
        ):
            return True
    return False


class ModelAccess:
    def __init__(self, service: FleetService, registry: ModelRegistry, base_url: str) -> None:
        self.service = service
        self.registry = registry
        self.base_url = base_url.rstrip("/")

    @staticmethod
    def unchanged(assignment: Assignment) -> bool:
        """True when :meth:`stamp` returns the assignment as it is (no registry model in it): no I/O."""
        return assignment.document is None or (
            assignment.document_json is not None and "/api/v1/models/" not in assignment.document_json
        )

    def stamp(self, assignment: Assignment) -> Assignment:
        """The assignment as served to its device: registry models get the device's route and token."""
        if assignment.document is None or self.unchanged(assignment):
            return assignment  # the common case, without touching the database
        secrets = self.service.store.device_secrets(assignment.device_id)
        if secrets is None or secrets.credential_hash is None:
            return assignment
        document = stamp(assignment.document, assignment.device_id, self.base_url, secrets.credential_hash)
        return assignment if document is None else replace(assignment, document=document, document_json=None)

    def authorize(self, presented: str | None, device_id: str, name: str, version: str) -> ModelRecord:
        """The model record if ``presented`` may download it for ``device_id``; else a 401/403/404."""
        if presented and presented.startswith(TOKEN_PREFIX):
            secrets = self.service.store.device_secrets(device_id)
            record = self.registry.store.model(name, version)
            if (
                secrets is None
                or record is None
                or not token_matches(
                    presented,
                    secrets.credential_hash,
                    device_id=device_id,
                    name=name,
                    version=version,
                    sha256=record.sha256,
                )
            ):
                raise UnauthorizedError(f"the model token is not valid for device {device_id!r} and {name}@{version}")
            if secrets.status is DeviceStatus.DISABLED:
                raise ForbiddenError(f"device {device_id!r} is deactivated; an operator can re-activate it")
            who = Principal(Kind.DEVICE, device_id)
        else:
            who = self.service.authenticate(presented)
            who.require_device(device_id)
            record = self.registry.model(who, name, version)
        self.require_named(who, record)
        return record

    def require_named(self, who: Principal, record: ModelRecord) -> None:
        """A device reads only the models its current deployment names (operators read all)."""
        if who.is_operator:
            return
        assignment = self.service.assignment(who, who.name)
        if not _names(assignment.document, self.base_url, record):
            raise ForbiddenError(f"device {who.name!r}'s deployment does not name model {record.ref}")
