"""A module's ``requirements.txt`` for one target platform: markers evaluated for that platform.

pip evaluates environment markers against the machine it runs on, even when ``pip download
--platform`` targets another; so the wheel set of ``numpy==2.4.6; platform_machine != "armv7l"`` is
decided here, for the image's platform and Python, before pip sees it. Inside the image pip
evaluates the same markers natively and agrees. Called by :mod:`outpost.builder.plan`.
"""

from __future__ import annotations

from pathlib import Path

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement

from outpost.builder.platforms import Platform
from outpost.errors import InputError

__all__ = ["marker_environment", "requirements_for"]


def marker_environment(platform: Platform, python_version: str) -> dict[str, str]:
    """The PEP 508 environment of CPython ``python_version`` on Linux ``platform``."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "os_name": "posix",
        "platform_machine": platform.machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python_version}.0",
        "python_version": python_version,
        "sys_platform": "linux",
    }


def requirements_for(path: Path, platform: Platform, python_version: str) -> list[str]:
    """The requirement lines of ``path`` that apply to ``platform``, markers removed, in file order.

    Only plain requirement lines are accepted (no ``-r``, ``--index-url`` ...): the build decides
    where wheels come from.
    """
    if not path.is_file():
        return []
    env = marker_environment(platform, python_version)
    result: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith("-"):
            raise InputError(f"{path}:{number}: {line.split()[0]} is not supported here; list requirements only")
        try:
            requirement = Requirement(line)
        except (InvalidRequirement, InvalidMarker) as exc:
            raise InputError(f"{path}:{number}: not a requirement: {exc}") from None
        if requirement.marker is None or requirement.marker.evaluate(env):
            requirement.marker = None
            result.append(str(requirement))
    return result
