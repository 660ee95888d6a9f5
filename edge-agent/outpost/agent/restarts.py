"""Restart policy decisions and bookkeeping, as pure functions of observed state and time.

Semantics as Azure documents them, and as its agent does not implement them:
``never`` never restarts; ``on-failure`` restarts non-zero exits; ``on-unhealthy`` restarts
non-zero exits and running modules whose health check says unhealthy; ``always`` restarts
any exit. Restarts wait ``Backoff.delay(count)``; after ``max_restarts`` the module is
``failed``; ``healthy_reset_secs`` of healthy running clears the count. Used by the planner
(what to do now) and the reporter (what to call it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from outpost.agent.observed import Health, ModuleState, RunState
from outpost.agent.spec import ModuleSpec
from outpost.manifest.models import ModuleStatus, RestartPolicy

__all__ = ["Decision", "RestartRecord", "RuntimeStatus", "decide", "runtime_status", "settle"]


@dataclass(frozen=True)
class RestartRecord:
    """Restarts the agent made of one module since it was last healthy long enough."""

    count: int = 0
    last_restart: float | None = None


class RuntimeStatus(StrEnum):
    """Azure edgeAgent's ``runtimeStatus`` values."""

    UNKNOWN = "unknown"
    BACKOFF = "backoff"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    FAILED = "failed"


class Decision(StrEnum):
    NOTHING = "nothing"
    RESTART_NOW = "restart-now"
    WAIT = "wait"
    GIVE_UP = "give-up"


def _wants_restart(spec: ModuleSpec, state: ModuleState) -> bool:
    policy = spec.restart_policy
    if state.state is RunState.RUNNING:
        return policy is RestartPolicy.ON_UNHEALTHY and state.health is Health.UNHEALTHY
    if state.state not in (RunState.EXITED, RunState.DEAD):
        return False
    failed = state.state is RunState.DEAD or (state.exit_code or 0) != 0
    return {
        RestartPolicy.NEVER: False,
        RestartPolicy.ON_FAILURE: failed,
        RestartPolicy.ON_UNHEALTHY: failed,
        RestartPolicy.ALWAYS: True,
    }[policy]


def decide(spec: ModuleSpec, state: ModuleState, record: RestartRecord, now: float) -> tuple[Decision, float]:
    """Whether to restart ``state`` now; the float is when to look again for ``WAIT``."""
    if spec.status is not ModuleStatus.RUNNING or not _wants_restart(spec, state):
        return Decision.NOTHING, 0.0
    if record.count >= spec.backoff.max_restarts:
        return Decision.GIVE_UP, 0.0
    since = max(t for t in (state.finished_at, record.last_restart, 0.0) if t is not None)
    if state.state is RunState.RUNNING:  # unhealthy: the health check already waited its retries
        since = record.last_restart or 0.0
    due = since + spec.backoff.delay(record.count)
    if now >= due or now < since:  # a clock that jumped back must not park the module for good
        return Decision.RESTART_NOW, now
    return Decision.WAIT, due


def settle(
    records: Mapping[str, RestartRecord],
    specs: Mapping[str, ModuleSpec],
    states: Mapping[str, ModuleState],
    now: float,
) -> dict[str, RestartRecord]:
    """Records with counts cleared for modules healthy-running for their reset time."""
    result: dict[str, RestartRecord] = {}
    for name, record in records.items():
        spec, state = specs.get(name), states.get(name)
        if spec is None:
            continue  # module gone from the deployment: forget its history
        healthy_since = state.started_at if state and state.running and state.health is not Health.UNHEALTHY else None
        reset = record.count and healthy_since is not None and now - healthy_since >= spec.backoff.healthy_reset_secs
        result[name] = replace(record, count=0) if reset else record
    return result


def runtime_status(
    spec: ModuleSpec | None, state: ModuleState | None, record: RestartRecord, now: float
) -> RuntimeStatus:
    """The ``runtimeStatus`` Azure's edgeAgent would report for this module."""
    if state is None:
        return RuntimeStatus.UNKNOWN
    if state.running:
        return RuntimeStatus.UNHEALTHY if state.health is Health.UNHEALTHY else RuntimeStatus.RUNNING
    if state.state is RunState.CREATED:
        return RuntimeStatus.STOPPED if spec and spec.status is ModuleStatus.STOPPED else RuntimeStatus.BACKOFF
    if spec is not None:
        decision, _ = decide(spec, state, record, now)
        if decision in (Decision.RESTART_NOW, Decision.WAIT):
            return RuntimeStatus.BACKOFF
        if decision is Decision.GIVE_UP:
            return RuntimeStatus.FAILED
    failed = state.state is RunState.DEAD or (state.exit_code or 0) != 0
    return RuntimeStatus.FAILED if failed else RuntimeStatus.STOPPED
