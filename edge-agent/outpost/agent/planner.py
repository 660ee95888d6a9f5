"""``plan(desired, observed, records, now)``: the commands that move a device toward its deployment.

Pure: no I/O, no clock, no randomness, so tests assert exact sequences. The reconciler runs
the plan, reads the device again and plans again until the plan is empty; the planner
therefore only has to be right about the next steps, never about history.

Order of a plan:
1. stop and remove modules this agent owns that the deployment no longer has;
2. pull every image that new or changed modules need, before any old container stops
   (download-then-kill: a failed download leaves the old version running);
3. per ``startupOrder`` group, lowest first: replace changed modules (stop, remove, create,
   start), create and start new ones, start or stop per ``status``, restart per policy.

Groups after one that starts something, or whose modules' health checks are still
``starting``, wait for a later round. So ``startupOrder`` means "started, and healthy if
it has a health check" before the next group starts, which Azure's agent does not promise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from outpost.agent.commands import Command, Create, Pull, Remove, Start, Stop
from outpost.agent.observed import Health, ModuleState, Observed, RunState
from outpost.agent.restarts import Decision, RestartRecord, decide
from outpost.agent.spec import Desired, ModuleSpec
from outpost.manifest.models import ImagePullPolicy, ModuleStatus

__all__ = ["Plan", "plan"]


@dataclass(frozen=True)
class Plan:
    """Commands to run now, and when to plan again if nothing else happens (backoff)."""

    commands: list[Command] = field(default_factory=list)
    wake_at: float | None = None
    failed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.commands)


def _pull(spec: ModuleSpec, desired: Desired, observed: Observed) -> Pull | None:
    present = spec.image in observed.images
    if spec.pull_policy is ImagePullPolicy.NEVER:
        # Nothing to fetch; a missing image fails at create with a message that says so.
        return None
    return Pull(module=spec.name, image=spec.image, required=not present, auth=desired.auth_for(spec.image))


def _steps(spec: ModuleSpec, state: ModuleState | None, desired: Desired) -> list[Command]:
    """Commands that (re)create a module and bring it to its desired status."""
    steps: list[Command] = []
    if state is not None:
        if state.running:
            steps.append(Stop(module=spec.name, id=state.id))
        steps.append(Remove(module=spec.name, id=state.id))
    steps.append(Create(module=spec.name, spec=spec, deployment_id=desired.deployment_id))
    if spec.status is ModuleStatus.RUNNING:
        steps.append(Start(module=spec.name))
    return steps


def plan(
    desired: Desired,
    observed: Observed,
    records: Mapping[str, RestartRecord] | None = None,
    now: float = 0.0,
) -> Plan:
    """The next commands for this device; see the module docstring for their order."""
    records = records or {}
    commands: list[Command] = []
    for name, gone in sorted(observed.modules.items()):
        if name not in desired.modules:
            if gone.running:
                commands.append(Stop(module=name, id=gone.id))
            commands.append(Remove(module=name, id=gone.id))

    pulls: dict[str, Pull] = {}
    groups: dict[int, list[Command]] = {}
    holding: set[int] = set()
    wake_at: float | None = None
    failed: list[str] = []
    for name, spec in sorted(desired.modules.items()):
        state = observed.modules.get(name)
        steps: list[Command] = []
        if state is None or state.config_hash != spec.config_hash:
            pull = _pull(spec, desired, observed)
            if pull is not None and spec.image not in pulls:
                pulls[spec.image] = pull
            steps = _steps(spec, state, desired)
        elif spec.status is ModuleStatus.STOPPED:
            if state.running:
                steps = [Stop(module=name, id=state.id)]
        elif state.state is RunState.CREATED or observed.stopped_by_reboot(state):
            steps = [Start(module=name)]  # not a restart: nothing failed
        else:
            decision, when = decide(spec, state, records.get(name, RestartRecord()), now)
            if decision is Decision.RESTART_NOW:
                steps = [Stop(module=name, id=state.id)] if state.running else []
                steps.append(Start(module=name, restart=True))
            elif decision is Decision.WAIT:
                wake_at = when if wake_at is None else min(wake_at, when)
            elif decision is Decision.GIVE_UP:
                failed.append(name)
        groups.setdefault(spec.startup_order, []).extend(steps)
        starting = state is not None and state.running and state.health is Health.STARTING
        if starting or any(isinstance(step, Create | Start) for step in steps):
            holding.add(spec.startup_order)

    commands.extend(pulls.values())
    for order in sorted(groups):
        commands.extend(groups[order])
        if order in holding:
            break
    return Plan(commands=commands, wake_at=wake_at, failed=tuple(failed))
