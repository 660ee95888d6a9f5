"""Failed commands wait before they run again: per module and command, with capped backoff.

Without this a command that fails (an image that cannot be pulled over a bad link, a create
the engine refuses) would be planned and tried again every round, a hot loop and a log flood.
A temporary failure waits ``Backoff.delay(n)``; a permanent one waits for outside help: a new
deployment, a changed module, or ``outpost restart MODULE`` (a retry request in the state
dir). Pure bookkeeping over times the reconciler's clock gives; the reconciler holds back the
commands this says are not due and reports the failures in each module's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outpost.agent.commands import Command
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.spec import Desired
from outpost.agent.state import StateDir
from outpost.backoff import Backoff, Retry
from outpost.errors import ModuleRuntimeError

__all__ = ["COMMAND_BACKOFF", "CommandFailure", "Failures", "restart_module"]

#: Retries of a failed command: 1 s doubling to 5 minutes, up to a fifth off at random.
COMMAND_BACKOFF = Backoff(first=1.0, cap=300.0, jitter=0.2)


@dataclass(frozen=True)
class CommandFailure:
    """The last failure of one module's command, and when it runs again (``retry.due_at``)."""

    action: str
    error: str
    permanent: bool
    at: float
    retry: Retry
    deployment_id: str
    config_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action, "error": self.error, "permanent": self.permanent, "at": self.at,
            "failures": self.retry.failures, "dueAt": self.retry.due_at, "deploymentId": self.deployment_id,
            "configHash": self.config_hash,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CommandFailure:
        due = data.get("dueAt")
        retry = Retry(int(data.get("failures", 1)), None if due is None else float(due))
        return cls(
            action=str(data["action"]), error=str(data.get("error", "")), permanent=bool(data.get("permanent")),
            at=float(data.get("at", 0.0)), retry=retry,
            deployment_id=str(data.get("deploymentId", "")), config_hash=str(data.get("configHash", "")),
        )  # fmt: skip


class Failures:
    """The failed commands of one agent, keyed by module, then action."""

    def __init__(
        self, backoff: Backoff = COMMAND_BACKOFF, entries: Mapping[str, Mapping[str, CommandFailure]] | None = None
    ) -> None:
        self.backoff = backoff
        self._entries: dict[str, dict[str, CommandFailure]] = {m: dict(a) for m, a in (entries or {}).items() if a}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def of(self, module: str) -> dict[str, CommandFailure]:
        return dict(self._entries.get(module, {}))

    def latest(self) -> dict[str, CommandFailure]:
        """Each failing module's most recent failure (what its status reports)."""
        return {m: max(a.values(), key=lambda f: f.at) for m, a in self._entries.items()}

    def forget_stale(self, desired: Desired) -> None:
        """Drop failures the desired state outdated: another deployment, a changed or removed module."""
        for module in list(self._entries):
            spec = desired.modules.get(module)
            kept = {
                action: f for action, f in self._entries[module].items()
                if spec is not None and f.deployment_id == desired.deployment_id and f.config_hash == spec.config_hash
            }  # fmt: skip
            self._set(module, kept)

    def forget(self, modules: Iterable[str], *, before: float | None = None) -> None:
        """Drop the failures of ``modules`` (those older than ``before``, if given): a retry request."""
        for module in modules:
            entries = self._entries.get(module, {})
            self._set(module, {a: f for a, f in entries.items() if before is not None and f.at >= before})

    def hold(self, commands: list[Command], now: float) -> tuple[list[Command], dict[str, CommandFailure]]:
        """Commands that may run now, and the modules held back (from their first command not due on)."""
        runnable: list[Command] = []
        held: dict[str, CommandFailure] = {}
        for command in commands:
            if command.module in held:
                continue
            failure = self._entries.get(command.module, {}).get(command.action)
            if failure is not None and not failure.retry.due(now):
                held[command.module] = failure
                continue
            runnable.append(command)
        return runnable, held

    def record(
        self,
        done: Iterable[Command],
        failed: Mapping[str, tuple[Command, Exception, bool]],
        desired: Desired,
        now: float,
    ) -> None:
        """Clear what succeeded; count what failed (``failed``: module -> command, error, permanent)."""
        for command in done:
            entries = self._entries.get(command.module, {})
            self._set(command.module, {a: f for a, f in entries.items() if a != command.action})
        for module, (command, error, permanent) in failed.items():
            spec = desired.modules.get(module)
            previous = self._entries.get(module, {}).get(command.action)
            retry = (previous.retry if previous is not None else Retry()).failed(self.backoff, now, permanent=permanent)
            failure = CommandFailure(
                action=command.action, error=str(error), permanent=permanent, at=now, retry=retry,
                deployment_id=desired.deployment_id, config_hash=spec.config_hash if spec is not None else "",
            )  # fmt: skip
            self._entries.setdefault(module, {})[command.action] = failure

    def wake_at(self) -> float | None:
        """When the earliest held command is due (``None``: nothing waits on time)."""
        dues = [f.retry.due_at for a in self._entries.values() for f in a.values() if f.retry.due_at is not None]
        return min(dues) if dues else None

    def to_json(self) -> dict[str, Any]:
        return {m: {a: f.to_json() for a, f in sorted(e.items())} for m, e in sorted(self._entries.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], backoff: Backoff = COMMAND_BACKOFF) -> Failures:
        entries: dict[str, dict[str, CommandFailure]] = {}
        for module, actions in data.items():
            try:
                entries[str(module)] = {str(a): CommandFailure.from_json(f) for a, f in actions.items()}
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a record we cannot read: retry that module now rather than never
        return cls(backoff, entries)

    def _set(self, module: str, entries: dict[str, CommandFailure]) -> None:
        if entries:
            self._entries[module] = entries
        else:
            self._entries.pop(module, None)


def restart_module(state: StateDir, runtime: ContainerRuntime, module: str, now: float) -> str:
    """``outpost restart MODULE``: retry its failed commands now, and restart it if it exists.
    Returns what was done, for people. Raises the runtime's error only when there is nothing to
    retry either (an unknown module)."""
    failing = module in state.failures()
    if failing:
        state.request_retry(module, now)
    try:
        runtime.restart(module)
    except ModuleRuntimeError:
        if not failing:
            raise
        return f"the agent retries the failed commands of {module} now"
    return f"restarted {module}" + (" and the agent retries its failed commands now" if failing else "")
