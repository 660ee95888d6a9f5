"""What is actually there: the modules a runtime reports, read fresh before every plan.

Runtimes (``adapters``) produce these; the planner and the status reporter read them.
Times are POSIX seconds so the planner can compare them with an injected clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Health", "ModuleState", "Observed", "RunState", "boot_time"]


class RunState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    DEAD = "dead"
    UNKNOWN = "unknown"


class Health(StrEnum):
    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ModuleState:
    """One module's container (or process) as the runtime sees it."""

    name: str
    id: str
    image: str
    config_hash: str
    state: RunState
    deployment_id: str = ""
    image_id: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    health: Health = Health.NONE

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING


@dataclass(frozen=True)
class Observed:
    """Every module this agent owns, and the image references present locally."""

    modules: Mapping[str, ModuleState] = field(default_factory=dict)
    images: frozenset[str] = frozenset()
    boot_time: float | None = None

    def stopped_by_reboot(self, state: ModuleState) -> bool:
        """The module ended before the device last booted: the reboot stopped it, not a crash."""
        return (
            self.boot_time is not None
            and state.state in (RunState.EXITED, RunState.DEAD)
            and state.finished_at is not None
            and state.finished_at < self.boot_time
        )


def boot_time() -> float | None:
    """When this machine booted (``btime`` in /proc/stat), or None where that is unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None
