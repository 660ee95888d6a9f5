"""The seam between rollouts (and the model registry) and the fleet's database.

Kept apart from :class:`outpost.fleet.store.FleetStore` so rollouts add tables without touching
the fleet's own seam. A rollout is one JSON document written compare-and-set on its version;
the lease makes one driver at a time act when several fleet instances share one database.
Implemented by :class:`outpost.fleet.adapters.rollouts.SqlRolloutStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ModelRecord", "RolloutStore"]


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    sha256: str
    size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    created_by: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "metadata": dict(self.metadata),
            "created": self.created,
            "createdBy": self.created_by,
        }


class RolloutStore(Protocol):
    def add_rollout(self, doc: dict[str, Any]) -> bool: ...
    def rollout(self, name: str) -> dict[str, Any] | None: ...
    def rollouts(self) -> list[dict[str, Any]]: ...
    def write_rollout(self, doc: dict[str, Any], expected_version: int) -> bool: ...
    def acquire_lease(self, name: str, holder: str, now: float, ttl: float) -> bool: ...

    def add_model(self, record: ModelRecord, content: bytes) -> bool: ...
    def model(self, name: str, version: str) -> ModelRecord | None: ...
    def models(self) -> list[ModelRecord]: ...
    def model_content(self, name: str, version: str, start: int = 0, end: int | None = None) -> bytes | None: ...
