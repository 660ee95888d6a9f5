"""``outpost check``: is this device able to run its deployment? Each check says what to do.

Pure checks over facts gathered by ``gather`` (runtime reachable, disk, clock, broker,
state dir, last deployment), so tests can feed facts directly. Called by the CLI.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from outpost.agent.runtime import ContainerRuntime
from outpost.agent.state import StateDir
from outpost.errors import ModuleRuntimeError

__all__ = ["Check", "Level", "check_disk", "gather"]

_GIB = 1024**3
_EARLIEST = time.mktime((2025, 1, 1, 0, 0, 0, 0, 0, -1))


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str
    hint: str = ""


def check_disk(name: str, path: Path, total: int, free: int) -> Check:
    """Warn under 10% or 2 GiB free, fail under 2% or 200 MiB (a full disk bricks devices)."""
    pct = 100 * free / total if total else 0
    text = f"{free / _GIB:.1f} GiB free of {total / _GIB:.1f} GiB ({pct:.0f}%) at {path}"
    if free < 200 * 1024**2 or pct < 2:
        return Check(name, Level.ERROR, text, "free space now: remove unused images (docker image prune) or old logs")
    if free < 2 * _GIB or pct < 10:
        return Check(name, Level.WARN, text, "disk is getting full: prune unused images and check module log volumes")
    return Check(name, Level.OK, text)


def _disk(name: str, path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return check_disk(name, path, usage.total, usage.free)


class Probes(Protocol):
    """What the checks ask of the machine beyond files (``agent.adapters.host_probes.HostProbes``)."""

    def broker_answers(self, host: str, port: int) -> bool: ...

    def ntp_synchronized(self) -> str:
        """``yes``/``no``, or empty when unknown."""
        ...


def _clock(probes: Probes) -> Check:
    now = time.time()
    if now < _EARLIEST:
        return Check(
            "clock", Level.ERROR, time.strftime("clock reads %Y-%m-%d", time.gmtime(now)), "set the time (RTC or NTP)"
        )
    if probes.ntp_synchronized() == "no":
        return Check("clock", Level.WARN, "clock is not NTP-synchronised", "enable time sync when the device is online")
    return Check("clock", Level.OK, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))


def _broker(address: str, probes: Probes) -> Check:
    host, _, port = address.rpartition(":")
    if port.isdigit() and probes.broker_answers(host or "127.0.0.1", int(port)):
        return Check("broker", Level.OK, f"edge hub broker answers on {address}")
    return Check(
        "broker",
        Level.WARN,
        f"nothing listens on {address}",
        "modules cannot exchange messages until the edge hub runs (it is part of the deployment)",
    )


def gather(
    state: StateDir | Path, runtime: ContainerRuntime | None, runtime_error: str, broker: str, probes: Probes
) -> list[Check]:
    """Run every check; ``runtime`` is None when it could not be created (``runtime_error`` says why).

    ``state`` is a bare ``Path`` when the state dir does not exist (checking must not create it).
    """
    checks: list[Check] = []
    path = state if isinstance(state, Path) else state.path
    if isinstance(state, Path):
        checks.append(
            Check(
                "state dir",
                Level.ERROR,
                f"{path} does not exist",
                "apply a deployment first (outpost agent apply MANIFEST creates it), or pass --state-dir",
            )
        )
    elif os.access(path, os.W_OK):
        checks.append(Check("state dir", Level.OK, str(path)))
    else:
        checks.append(Check("state dir", Level.ERROR, str(path), "run as root or pass --state-dir"))
    if runtime is None:
        checks.append(Check("runtime", Level.ERROR, runtime_error, "start dockerd, or use --runtime process"))
    else:
        try:
            info = runtime.platform()
            checks.append(
                Check("runtime", Level.OK, f"{runtime.kind} {info.get('version', '')} ({info.get('architecture', '')})")
            )
            if info.get("rootDir"):
                checks.append(_disk("image disk", Path(info["rootDir"])))
        except ModuleRuntimeError as exc:
            checks.append(Check("runtime", Level.ERROR, str(exc), "start dockerd, or use --runtime process"))
    checks.append(_disk("state disk", path))
    checks.append(_clock(probes))
    checks.append(_broker(broker, probes))
    status = None if isinstance(state, Path) else state.status()
    if status is None:
        checks.append(Check("deployment", Level.WARN, "no deployment applied yet", "outpost agent apply MANIFEST"))
    else:
        code = status.get("lastDesiredStatus", {}).get("code")
        text = status.get("lastDesiredStatus", {}).get("description") or "converged"
        level = Level.OK if code == 200 else Level.WARN if code == 406 else Level.ERROR
        checks.append(
            Check(
                "deployment",
                level,
                f"{text} (status code {code})",
                "" if level is Level.OK else "outpost list; outpost logs MODULE",
            )
        )
    return checks
