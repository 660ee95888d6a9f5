# ruff: noqa: ARG002  (the ContainerRuntime signatures, whose arguments a fake ignores)
"""An in-memory ``ContainerRuntime`` for pure tests of the reconciler and its callers.

Modules are records in a dict: ``create`` makes one, ``start`` runs it, nothing runs for real.
Failures are scripted per action and module (``fail("create", "m", TemporaryError(...))``,
optionally only the next ``times`` calls), every call is recorded in ``calls``, and ``exit``
simulates a crash. Time comes from an injected clock, so tests drive it with a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from outpost.agent.observed import ModuleState, Observed, RunState
from outpost.agent.runtime import Platform
from outpost.agent.spec import ModuleSpec, RegistryAuth
from outpost.errors import ModuleRuntimeError, PermanentError

__all__ = ["FakeRuntime"]


@dataclass
class _Failure:
    error: ModuleRuntimeError
    times: int | None  # None: every call


class FakeRuntime:
    """A ``ContainerRuntime`` whose modules exist only in memory."""

    kind = "fake"

    def __init__(self, *, namespace: str = "test", clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.clock = clock
        self.modules: dict[str, ModuleState] = {}
        self.images: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (action, module or image), in order
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._ids = 0

    # -- scripting ------------------------------------------------------------------------------

    def fail(self, action: str, target: str, error: ModuleRuntimeError, *, times: int | None = None) -> None:
        """Make ``action`` on ``target`` (a module, or an image for ``pull``) raise ``error``."""
        self._failures[(action, target)] = _Failure(error, times)

    def heal(self, action: str, target: str) -> None:
        self._failures.pop((action, target), None)

    def exit(self, module: str, code: int) -> None:
        """The module's process ends by itself with ``code``."""
        state = self.modules[module]
        self.modules[module] = replace(state, state=RunState.EXITED, exit_code=code, finished_at=self.clock())

    def count(self, action: str, target: str) -> int:
        return self.calls.count((action, target))

    def _call(self, action: str, target: str) -> None:
        self.calls.append((action, target))
        failure = self._failures.get((action, target))
        if failure is None:
            return
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[(action, target)]
        raise failure.error

    # -- ContainerRuntime -----------------------------------------------------------------------

    def observe(self) -> Observed:
        return Observed(modules=dict(self.modules), images=frozenset(self.images))

    def pull(self, image: str, auth: RegistryAuth | None) -> None:
        self._call("pull", image)
        self.images.add(image)

    def create(self, spec: ModuleSpec, deployment_id: str) -> str:
        self._call("create", spec.name)
        if spec.name in self.modules:
            raise PermanentError(f"module {spec.name} exists already")
        self._ids += 1
        id = f"fake-{self._ids}"
        self.modules[spec.name] = ModuleState(
            name=spec.name, id=id, image=spec.image, config_hash=spec.config_hash, state=RunState.CREATED,
            deployment_id=deployment_id,
        )  # fmt: skip
        return id

    def start(self, module: str) -> None:
        self._call("start", module)
        state = self._get(module)
        self.modules[module] = replace(
            state, state=RunState.RUNNING, exit_code=None, started_at=self.clock(), finished_at=None
        )

    def stop(self, module: str, id: str, timeout: float = 10.0) -> None:
        self._call("stop", module)
        state = self._get(module)
        self.modules[module] = replace(state, state=RunState.EXITED, exit_code=0, finished_at=self.clock())

    def remove(self, module: str, id: str) -> None:
        self._call("remove", module)
        self._get(module)
        del self.modules[module]

    def logs(self, module: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        self._get(module)
        return iter(())

    def platform(self) -> Platform:
        return {"os": "linux", "architecture": "fake", "version": "0"}

    def remove_image(self, image: str) -> bool:
        if image in {s.image for s in self.modules.values()} or image not in self.images:
            return False
        self.images.discard(image)
        return True

    def restart(self, module: str, timeout: float = 10.0) -> None:
        self._call("restart", module)
        self._get(module)
        self.start(module)

    def _get(self, module: str) -> ModuleState:
        try:
            return self.modules[module]
        except KeyError:
            raise PermanentError(f"no module {module!r}") from None
