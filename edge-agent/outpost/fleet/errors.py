"""What the fleet service refuses, by cause; the HTTP adapter maps each to one status code.

Hierarchy::

    OutpostError
    └── FleetError              status: the HTTP status code it becomes
        ├── InvalidError (400)       bad input; ``problems`` name the places (JSON pointers, line/column)
        ├── UnauthorizedError (401)  no credential, or one that matches nothing
        ├── ForbiddenError (403)     a valid credential asked for what is not its own, or the device is deactivated
        ├── NotFoundError (404)
        ├── ConflictError (409)      it exists already, or content was changed where content is immutable
        └── GoneError (410)          an activation key that was used already
"""

from __future__ import annotations

from outpost.errors import OutpostError, Problem

__all__ = [
    "ConflictError",
    "FleetError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "NotFoundError",
    "UnauthorizedError",
]


class FleetError(OutpostError):
    """Base of the fleet's refusals; ``status`` is the HTTP status code."""

    status = 500

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.message = message
        self.problems = problems or []
        super().__init__(message)


class InvalidError(FleetError):
    status = 400


class UnauthorizedError(FleetError):
    status = 401


class ForbiddenError(FleetError):
    status = 403


class NotFoundError(FleetError):
    status = 404


class ConflictError(FleetError):
    status = 409


class GoneError(FleetError):
    status = 410
