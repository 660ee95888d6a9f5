"""The fleet: devices, their twins, groups and deployments, and what each device should run.

Pure parts live here (records, identities and credentials, twin documents, resolution of each
device's effective deployment, status counts, metrics queries, the service's rules); the HTTP
server, the database and the client are in :mod:`outpost.fleet.adapters`. The device side of the
link lives with the agent.
"""

from outpost.fleet.errors import (
    ConflictError,
    FleetError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnauthorizedError,
)
from outpost.fleet.models import DeploymentRecord, DeviceRecord, DeviceStatus, HistoryEntry, ModuleTwin

__all__ = [
    "ConflictError",
    "DeploymentRecord",
    "DeviceRecord",
    "DeviceStatus",
    "FleetError",
    "ForbiddenError",
    "GoneError",
    "HistoryEntry",
    "InvalidError",
    "ModuleTwin",
    "NotFoundError",
    "UnauthorizedError",
]
