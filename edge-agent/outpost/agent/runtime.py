"""The one seam between the agent and whatever runs modules: Docker or plain processes.

Implementations live in ``outpost.agent.adapters`` (the only modules that import docker);
they translate their library's exceptions into ``TemporaryError``/``PermanentError``.
Every container or process they create carries the labels below, so an agent owns exactly
its own modules and leaves everything else on the machine alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from outpost.agent.observed import Observed
from outpost.agent.spec import ModuleSpec, RegistryAuth

__all__ = ["LABEL_AGENT", "LABEL_DEPLOYMENT", "LABEL_HASH", "LABEL_MODULE", "ContainerRuntime", "Platform"]

LABEL_AGENT = "io.outpost.agent"
LABEL_MODULE = "io.outpost.module"
LABEL_HASH = "io.outpost.config-hash"
LABEL_DEPLOYMENT = "io.outpost.deployment"

Platform = dict[str, str]


class ContainerRuntime(Protocol):
    """Runs modules. ``namespace`` separates agents sharing one engine (tests, side-by-side installs)."""

    kind: str
    namespace: str

    def observe(self) -> Observed:
        """Every module this agent owns, fresh, plus the images present locally."""
        ...

    def pull(self, image: str, auth: RegistryAuth | None) -> None: ...

    def create(self, spec: ModuleSpec, deployment_id: str) -> str:
        """Create (not start) the module; returns its id."""
        ...

    def start(self, module: str) -> None: ...

    def stop(self, module: str, id: str, timeout: float = 10.0) -> None: ...

    def remove(self, module: str, id: str) -> None: ...

    def logs(self, module: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        """The module's output, line by line (stdout and stderr interleaved)."""
        ...

    def platform(self) -> Platform:
        """``os``, ``architecture`` and ``version`` of the runtime, for the reported properties."""
        ...

    def remove_image(self, image: str) -> bool:
        """Delete an image no container uses; False when it is in use or already gone."""
        ...

    def restart(self, module: str, timeout: float = 10.0) -> None:
        """Stop and start a module in place (``outpost restart``); the agent's plan is not involved."""
        ...
