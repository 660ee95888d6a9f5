"""Runtimes: the only modules of the agent that import docker or spawn processes.

``make_runtime`` is the composition point the CLI uses; ``auto`` picks Docker when an engine
answers and the process runtime otherwise.
"""

from __future__ import annotations

from pathlib import Path

from outpost.agent.runtime import ContainerRuntime
from outpost.errors import ModuleRuntimeError

__all__ = ["docker_available", "make_runtime"]


def docker_available() -> bool:
    """Whether a Docker engine answers a ping right now."""
    from outpost.agent.adapters.docker_runtime import DockerRuntime

    try:
        return bool(DockerRuntime().client.ping())
    except Exception:
        return False


def make_runtime(
    kind: str, *, state_dir: Path, namespace: str = "default", workdir: Path | None = None
) -> ContainerRuntime:
    """Build the runtime named ``kind`` (``docker``, ``process`` or ``auto``)."""
    if kind == "auto":
        kind = "docker" if docker_available() else "process"
    if kind == "docker":
        from outpost.agent.adapters.docker_runtime import DockerRuntime
        from outpost.agent.state import image_pins

        return DockerRuntime(namespace, pins=lambda: image_pins(state_dir))  # read lazily: creates no state dir
    if kind == "process":
        from outpost.agent.adapters.process_runtime import ProcessRuntime

        return ProcessRuntime(state_dir, namespace, workdir=workdir)
    raise ModuleRuntimeError(f"unknown runtime {kind!r}; use docker, process or auto", action="connect")
