"""Modules as iotedgedev describes them: a folder with a ``module.json``, read unchanged.

``module.json`` (iotedgedev's format)::

    {"image": {"repository": "outpost/fft-filter",
               "tag": {"version": "0.1.0", "platforms": {"amd64": "./Dockerfile", "arm64v8": "./Dockerfile"}},
               "buildOptions": ["--build-arg", "X=1"], "contextPath": "./"},
     "outpost": {"unsupportedPlatforms": {"arm32v7": "why"},
                 "smokeTest": ["python3", "-m", "fft_filter", "--self-test"],
                 "baseImage": "outpost/base-hub:bookworm-{debian}"}}

Like iotedgedev, ``$VAR``/``${VAR}`` in the file are expanded from the environment (``.env`` included),
the module's name is its folder's name, paths are relative to the folder, and an image is tagged
``repository:version-platform``. The ``outpost`` object is ours: a platform the module cannot be built
for, with the reason the build prints; the command that smoke-tests a built image; and the base image
(pattern) of a module that needs another one than the build's default.
Called by :mod:`outpost.builder.plan` and the ``outpost build`` command.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.builder.platforms import Platform, platform_named
from outpost.builder.template import expand_document
from outpost.errors import InputError

__all__ = ["BUILD_OPTIONS", "ModuleSpec", "ModuleSpecError", "discover_modules", "load_module"]

# docker build options a module.json may carry in buildOptions (others would change where or how the
# image is built behind the plan's back: --platform, --tag, --file, --push, --output ...).
BUILD_OPTIONS = frozenset({"--build-arg", "--label", "--target", "--add-host", "--shm-size", "--ulimit", "--no-cache"})
_FLAGS_WITHOUT_VALUE = frozenset({"--no-cache"})


class ModuleSpecError(InputError):
    """A module.json is missing, not JSON, or breaks the format; names the file and the field."""

    def __init__(self, path: Path, pointer: str, message: str) -> None:
        self.path = path
        self.pointer = pointer
        super().__init__(f"{path}: {pointer or '/'}: {message}")


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """One module folder, resolved: what to build, from what, for which platforms."""

    name: str
    folder: Path
    repository: str
    version: str
    dockerfiles: Mapping[str, Path]  # platform key -> Dockerfile (absolute)
    context: Path
    build_options: tuple[str, ...] = ()
    unsupported: Mapping[str, str] = field(default_factory=dict)  # platform key -> reason
    smoke_test: tuple[str, ...] = ()
    description: str = ""
    base_image: str = ""  # pattern ({debian}, {key}, {arch}) overriding the build's --base-image

    def tag(self, platform: Platform) -> str:
        """iotedgedev's per-platform tag: ``0.1.0-arm64v8``."""
        return f"{self.version}-{platform.key}".lower()


def _require_str(path: Path, pointer: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModuleSpecError(path, pointer, f"expected a non-empty string, got {json.dumps(value)}")
    return value.strip()


def _build_options(path: Path, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ModuleSpecError(path, "/image/buildOptions", "expected a list of docker build options")
    args: list[str] = []
    for index, item in enumerate(raw):
        pointer = f"/image/buildOptions/{index}"
        words = shlex.split(_require_str(path, pointer, item))
        i = 0
        while i < len(words):
            flag, eq, value = words[i].partition("=")
            if flag not in BUILD_OPTIONS:
                allowed = ", ".join(sorted(BUILD_OPTIONS))
                raise ModuleSpecError(path, pointer, f"{flag!r} is not allowed here (allowed: {allowed})")
            if flag in _FLAGS_WITHOUT_VALUE:
                args.append(flag)
            elif eq:
                args += [flag, value]
            elif i + 1 < len(words):
                i += 1
                args += [flag, words[i]]
            else:
                raise ModuleSpecError(path, pointer, f"{flag} needs a value")
            i += 1
    return tuple(args)


def _inside(path: Path, pointer: str, folder: Path, relative: str) -> Path:
    resolved = (folder / relative).resolve()
    if not resolved.exists():
        raise ModuleSpecError(path, pointer, f"{relative!r} does not exist (relative to {folder})")
    return resolved


def load_module(folder: Path, env: Mapping[str, str] | None = None) -> ModuleSpec:
    """Read ``folder/module.json``; raise :class:`ModuleSpecError` naming the field on any problem."""
    folder = folder.resolve()
    path = folder / "module.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModuleSpecError(path, "", f"cannot read it: {exc.strerror or exc}") from exc
    try:
        doc = expand_document(json.loads(text), env or {}, source=str(path))
    except ValueError as exc:
        raise ModuleSpecError(path, "", f"not valid JSON: {exc}") from exc
    image = doc.get("image") if isinstance(doc, dict) else None
    if not isinstance(image, dict):
        raise ModuleSpecError(path, "/image", "missing: module.json needs an image object")
    tag = image.get("tag")
    if not isinstance(tag, dict):
        raise ModuleSpecError(path, "/image/tag", "missing: needs version and platforms")
    repository = _require_str(path, "/image/repository", image.get("repository"))
    version = _require_str(path, "/image/tag/version", tag.get("version"))
    platforms = tag.get("platforms")
    if not isinstance(platforms, dict) or not platforms:
        raise ModuleSpecError(path, "/image/tag/platforms", "expected an object of platform: Dockerfile")
    dockerfiles: dict[str, Path] = {}
    for key, dockerfile in platforms.items():
        pointer = f"/image/tag/platforms/{key}"
        if key.endswith(".debug") or key.startswith("windows"):
            continue  # iotedgedev's debug and Windows variants: not built by outpost build
        platform = _platform(path, pointer, key)
        dockerfiles[platform.key] = _inside(path, pointer, folder, _require_str(path, pointer, dockerfile))
    context = _inside(path, "/image/contextPath", folder, str(image.get("contextPath", ".")))
    extra = doc.get("outpost", {})
    if not isinstance(extra, dict):
        raise ModuleSpecError(path, "/outpost", "expected an object")
    unsupported: dict[str, str] = {}
    for key, reason in (extra.get("unsupportedPlatforms") or {}).items():
        pointer = f"/outpost/unsupportedPlatforms/{key}"
        unsupported[_platform(path, pointer, key).key] = _require_str(path, pointer, reason)
    smoke = extra.get("smokeTest", [])
    if not isinstance(smoke, list) or not all(isinstance(word, str) and word for word in smoke):
        raise ModuleSpecError(path, "/outpost/smokeTest", "expected a command as a list of strings")
    base_image = extra.get("baseImage", "")
    if base_image:
        base_image = _require_str(path, "/outpost/baseImage", base_image)
    return ModuleSpec(
        name=folder.name,
        folder=folder,
        repository=repository.lower(),
        version=version,
        dockerfiles=dockerfiles,
        context=context,
        build_options=_build_options(path, image.get("buildOptions")),
        unsupported=unsupported,
        smoke_test=tuple(smoke),
        description=str(doc.get("description", "")),
        base_image=base_image,
    )


def _platform(path: Path, pointer: str, key: str) -> Platform:
    try:
        return platform_named(key)
    except InputError as exc:
        raise ModuleSpecError(path, pointer, str(exc)) from None


def discover_modules(
    modules_dir: Path, names: list[str] | None = None, env: Mapping[str, str] | None = None
) -> list[ModuleSpec]:
    """Every module under ``modules_dir`` (folders with a module.json), or only ``names``, by name."""
    if not modules_dir.is_dir():
        raise InputError(f"{modules_dir}: no such modules folder (use --modules-dir)")
    found = {p.parent.name: p.parent for p in sorted(modules_dir.glob("*/module.json"))}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(
                f"no module named {', '.join(missing)} in {modules_dir} (modules: {', '.join(found) or 'none'})"
            )
        folders = [found[n] for n in dict.fromkeys(names)]
    else:
        folders = list(found.values())
    if not folders:
        raise InputError(f"{modules_dir}: no module folders (each needs a module.json)")
    return [load_module(folder, env) for folder in folders]
