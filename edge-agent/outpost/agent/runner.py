"""Execute a plan's commands through an ``{action: executor}`` table over a runtime.

A failed command skips the rest of that module's commands in the plan (so a failed pull
never stops the old container), but other modules go on. Restart bookkeeping is updated
from what actually ran. Called by ``reconciler``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outpost.agent.commands import Command, Create, Pull, Remove, Start, Stop
from outpost.agent.restarts import RestartRecord
from outpost.agent.runtime import ContainerRuntime
from outpost.errors import ModuleRuntimeError, PermanentError

__all__ = ["Outcome", "Runner"]

log = logging.getLogger("outpost.agent.runner")


@dataclass
class Outcome:
    """What one plan run did: commands done, per-module failures (and the command that failed),
    updated restart records."""

    done: list[Command] = field(default_factory=list)
    failures: dict[str, ModuleRuntimeError] = field(default_factory=dict)
    failed: dict[str, Command] = field(default_factory=dict)
    records: dict[str, RestartRecord] = field(default_factory=dict)
    pull_seconds: float = 0.0

    @property
    def permanent(self) -> dict[str, ModuleRuntimeError]:
        return {m: f for m, f in self.failures.items() if isinstance(f, PermanentError)}


class Runner:
    """Runs commands against one runtime; ``clock`` stamps restarts (injected for tests)."""

    def __init__(self, runtime: ContainerRuntime, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self._executors: dict[str, Callable[[Any], None]] = {
            "pull": self._pull,
            "create": self._create,
            "start": self._start,
            "stop": self._stop,
            "remove": self._remove,
        }
        self._outcome = Outcome()
        self._refreshed: dict[str, float] = {}

    #: A present image is refreshed from its registry at most this often: plans repeat a
    #: pull every round until the module is created, and offline devices must not wait on it.
    REFRESH_SECS = 300.0

    def run(self, commands: list[Command], records: Mapping[str, RestartRecord]) -> Outcome:
        self._outcome = outcome = Outcome(records=dict(records))
        for command in commands:
            if command.module in outcome.failures:
                continue
            try:
                self._executors[command.action](command)
            except ModuleRuntimeError as exc:
                log.warning("%s %s failed: %s", command.action, command.module, exc)
                outcome.failures[command.module] = exc
                outcome.failed[command.module] = command
                continue
            outcome.done.append(command)
        return outcome

    def _pull(self, command: Pull) -> None:
        began = time.monotonic()
        if not command.required and began - self._refreshed.get(command.image, -self.REFRESH_SECS) < self.REFRESH_SECS:
            return
        self._refreshed[command.image] = began
        try:
            self.runtime.pull(command.image, command.auth)
        except ModuleRuntimeError:
            if command.required:
                raise
            log.info("pull of %s failed; using the local copy", command.image)
        finally:
            self._outcome.pull_seconds += time.monotonic() - began

    def _create(self, command: Create) -> None:
        self.runtime.create(command.spec, command.deployment_id)

    def _start(self, command: Start) -> None:
        self.runtime.start(command.module)
        if command.restart:
            old = self._outcome.records.get(command.module, RestartRecord())
            self._outcome.records[command.module] = RestartRecord(count=old.count + 1, last_restart=self.clock())

    def _stop(self, command: Stop) -> None:
        self.runtime.stop(command.module, command.id)

    def _remove(self, command: Remove) -> None:
        self.runtime.remove(command.module, command.id)
