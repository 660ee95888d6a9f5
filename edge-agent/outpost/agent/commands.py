"""The steps a plan is made of: plain frozen data, tagged by ``action``, executed by the runner.

Keeping commands as data lets planner tests assert exact sequences and lets the runner map
each action to one runtime call (``runner.Runner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from outpost.agent.spec import ModuleSpec, RegistryAuth

__all__ = ["Command", "Create", "Pull", "Remove", "Start", "Stop"]


@dataclass(frozen=True)
class Pull:
    """Fetch ``image``. ``required``: the image is not present locally, so failure is fatal."""

    action: ClassVar[str] = "pull"
    module: str
    image: str
    required: bool
    auth: RegistryAuth | None = None


@dataclass(frozen=True)
class Create:
    action: ClassVar[str] = "create"
    module: str
    spec: ModuleSpec
    deployment_id: str


@dataclass(frozen=True)
class Start:
    """Start a created or exited module; ``restart`` counts it against the restart policy."""

    action: ClassVar[str] = "start"
    module: str
    restart: bool = False


@dataclass(frozen=True)
class Stop:
    action: ClassVar[str] = "stop"
    module: str
    id: str


@dataclass(frozen=True)
class Remove:
    action: ClassVar[str] = "remove"
    module: str
    id: str


Command = Pull | Create | Start | Stop | Remove
