"""The environment every module gets from the agent: who it is and how to reach the hub.

The contract with the module SDK is in ``docs/hub.md``. Passwords are derived from the device
key (``outpost.wire.credentials``), so the hub computes the same ones without being told.
Called by the CLI's composition of a ``Reconciler``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import InputError
from outpost.wire.credentials import device_key, module_password

__all__ = ["HubAddress", "ModuleEnvironment", "default_device_id"]


def default_device_id() -> str:
    return os.environ.get("OUTPOST_DEVICE_ID") or os.uname().nodename.split(".")[0] or "device"


@dataclass(frozen=True)
class HubAddress:
    host: str = "127.0.0.1"
    port: int = 1883

    @classmethod
    def parse(cls, text: str) -> HubAddress:
        """``HOST:PORT`` -> the address; ``InputError`` for anything else."""
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"a hub address is HOST:PORT, not {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class ModuleEnvironment:
    """Callable: module name -> the variables the agent adds to that module's environment."""

    def __init__(self, device_id: str, hub: HubAddress, key_root: Path, agent_state: Path | None = None) -> None:
        self.device_id = device_id
        self.hub = hub
        self.key_root = key_root
        self.agent_state = agent_state
        self._key: bytes | None = None

    def __call__(self, module: str) -> Mapping[str, str]:
        if self._key is None:
            self._key = device_key(self.key_root)
        return {
            "IOTEDGE_MODULEID": module,
            "IOTEDGE_DEVICEID": self.device_id,
            "OUTPOST_DEVICE_ID": self.device_id,
            "OUTPOST_HUB_HOST": self.hub.host,
            "OUTPOST_HUB_PORT": str(self.hub.port),
            "OUTPOST_MODULE_PASSWORD": module_password(self._key, module),
            # Where the hub (the edgeHub module) reads the deployment when it runs as a process.
            **({"OUTPOST_AGENT_STATE_DIR": str(self.agent_state)} if self.agent_state else {}),
        }
