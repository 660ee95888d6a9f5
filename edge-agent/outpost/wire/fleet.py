"""What the fleet's client and its callers agree on without importing an HTTP library: the errors.

The HTTP client is :mod:`outpost.wire.adapters.fleet_http`; the agent's fleet link and the CLI
catch these.
"""

from __future__ import annotations

from outpost.errors import OutpostError, Problem

__all__ = ["FleetCallError", "Unreachable"]


class FleetCallError(OutpostError):
    """The fleet refused a call (``status`` 4xx/5xx) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, *, status: int = 0, problems: list[Problem] | None = None) -> None:
        self.status = status
        self.message = message
        self.problems = problems or []
        super().__init__(message)


class Unreachable(FleetCallError):  # noqa: N818 (a state, like httpx's names)
    """No answer: connection refused, timed out, or the TLS handshake failed."""
