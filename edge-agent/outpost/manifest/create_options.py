"""``settings.createOptions``: join Azure's chunked form and parse it into Docker create options.

Azure splits long create options over ``createOptions``, ``createOptions01``,
``createOptions02``...; its agent joins them in order and refuses gaps
(edge-util ``JsonEx.cs``). Called by ``validation`` (to report problems with pointers) and by
the agent's runtimes (to build a container).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from outpost.errors import Problem
from outpost.manifest.pointers import join

__all__ = ["DOCKER_CREATE_KEYS", "DOCKER_HOST_CONFIG_KEYS", "chunk_keys", "join_chunks", "parse_create_options"]

_CHUNK = re.compile(r"^createOptions(\d+)$")

#: Top-level keys of Docker Engine's ``ContainerCreate`` body. Docker (Go) matches JSON keys
#: case-insensitively, so only keys that match none of these case-insensitively are suspicious.
DOCKER_CREATE_KEYS = (
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
    "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
    "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
    "StopTimeout", "Shell", "HostConfig", "NetworkingConfig",
)  # fmt: skip
_KNOWN_LOWER = {key.lower() for key in DOCKER_CREATE_KEYS}

#: Keys of ``HostConfig`` (Docker Engine API ``HostConfig`` with its embedded ``Resources``);
#: checked the same way, so a misspelt ``HostConfig.Binds`` or ``HostConfig.Bogus`` is flagged too.
DOCKER_HOST_CONFIG_KEYS = (
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy", "AutoRemove",
    "VolumeDriver", "VolumesFrom", "Mounts", "ConsoleSize", "Annotations", "CapAdd", "CapDrop", "Capabilities",
    "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links",
    "OomScoreAdj", "PidMode", "Privileged", "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt",
    "Tmpfs", "UTSMode", "UsernsMode", "ShmSize", "Sysctls", "Runtime", "Isolation", "MaskedPaths",
    "ReadonlyPaths", "Init", "InitPath", "LxcConf",
    # Resources
    "CpuShares", "Memory", "CgroupParent", "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuPeriod", "CpuQuota",
    "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "Devices", "DeviceCgroupRules",
    "DeviceRequests", "KernelMemory", "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness",
    "NanoCpus", "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps",
    "IOMaximumBandwidth",
)  # fmt: skip
_HOST_CONFIG_LOWER = {key.lower() for key in DOCKER_HOST_CONFIG_KEYS}
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def chunk_keys(settings: Mapping[str, Any]) -> list[str]:
    """The ``createOptionsNN`` keys present, in numeric order."""
    found = [(int(m.group(1)), key) for key in settings if (m := _CHUNK.match(key))]
    return [key for _, key in sorted(found)]


def join_chunks(settings: Mapping[str, Any], pointer: str) -> tuple[str | dict[str, Any] | None, list[Problem]]:
    """Return the whole createOptions value of a ``settings`` object and the problems found.

    ``pointer`` is the JSON pointer of ``settings``; problems point at the offending chunk.
    """
    base = settings.get("createOptions")
    keys = chunk_keys(settings)
    if not keys:
        return base, []
    problems: list[Problem] = []
    if not isinstance(base, str):
        problems.append(
            Problem(
                join(pointer, keys[0]),
                "createOptions chunks continue a createOptions string, but createOptions is "
                + ("missing" if base is None else "not a string")
                + "; put the first part in createOptions",
            )
        )
        return base, problems
    parts = [base]
    for index, key in enumerate(keys, start=1):
        expected = f"createOptions{index:02d}"
        if key != expected:
            problems.append(
                Problem(
                    join(pointer, key),
                    f"expected {expected} next, found {key}; chunks must be numbered 01, 02, ... without gaps",
                )
            )
            break
        value = settings[key]
        if not isinstance(value, str):
            problems.append(
                Problem(join(pointer, key), f"a createOptions chunk must be a string, got {type(value).__name__}")
            )
            break
        parts.append(value)
    return "".join(parts), problems


def parse_create_options(
    value: str | Mapping[str, Any] | None, pointer: str
) -> tuple[dict[str, Any], list[Problem], list[Problem]]:
    """Parse a joined createOptions value into a dict.

    Returns ``(options, problems, warnings)``; warnings name top-level keys Docker would ignore.
    """
    if value is None or value == "":
        return {}, [], []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            return {}, [Problem(pointer, f"createOptions is not valid JSON: {exc.msg} at character {exc.pos + 1}")], []
        if not isinstance(parsed, dict):
            kind = _JSON_KINDS.get(type(parsed), type(parsed).__name__)
            return {}, [Problem(pointer, f"createOptions must be a JSON object, got {kind}")], []
        options: dict[str, Any] = parsed
    else:
        options = dict(value)
    warnings = _unknown_keys(options, pointer, DOCKER_CREATE_KEYS, _KNOWN_LOWER, "")
    for key, section in options.items():
        if key.lower() == "hostconfig" and isinstance(section, Mapping):
            warnings += _unknown_keys(
                section, join(pointer, key), DOCKER_HOST_CONFIG_KEYS, _HOST_CONFIG_LOWER, f"{key}."
            )
    return options, [], warnings


def _unknown_keys(
    options: Mapping[str, Any], pointer: str, known: tuple[str, ...], lower: set[str], prefix: str
) -> list[Problem]:
    """Warnings for keys Docker would ignore (Go matches JSON keys case-insensitively)."""
    warnings = []
    for key in options:
        if key.lower() not in lower:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {prefix}{hint[0]}?" if hint else ""
            warnings.append(Problem(join(pointer, key), f"Docker ignores create option '{prefix}{key}'{suggestion}"))
    return warnings
