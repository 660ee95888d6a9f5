"""What every module's ``main()`` repeats around its own logic, written once.

``start_module`` sets up logging, a stop flag that SIGTERM/SIGINT set (the agent stops modules
with SIGTERM), and a connected ``ModuleClient`` from the agent's environment;
``initial_twin`` returns the desired properties, or ``{}`` with a warning when the hub has none
for this module yet (the module then runs on defaults until a patch arrives).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from outpost.sdk.client import ModuleClient
from outpost.sdk.errors import SdkError
from outpost.stopping import stop_on_signals

__all__ = ["ModuleRun", "initial_twin", "start_module"]


@dataclass
class ModuleRun:
    """A started module: its client, its stop flag and its logger."""

    client: ModuleClient
    stop: threading.Event
    log: logging.Logger


def start_module(name: str, **client_options: Any) -> ModuleRun:
    """Logging, SIGTERM/SIGINT -> ``stop``, and ``ModuleClient.from_environment().connect()``.

    Call it from the main thread (signal handlers can only be set there).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop_on_signals()
    client = ModuleClient.from_environment(**client_options)
    client.connect()
    return ModuleRun(client=client, stop=stop, log=logging.getLogger(name))


def initial_twin(client: ModuleClient, timeout: float = 5.0) -> dict[str, Any]:
    """The module's desired properties, or ``{}`` when the hub has none for it yet."""
    try:
        return client.twin(timeout)
    except SdkError as exc:
        logging.getLogger("outpost.sdk").warning(
            "%s: no desired properties yet (%s); running with defaults until a patch arrives", client.module_id, exc
        )
        return {}
