"""iotedgedev's placeholders, expanded: ``${MODULES.name}``, ``${MODULES.name.arm64v8}``, ``$VAR``, ``${VAR}``.

Expansion works on the parsed JSON's strings (keys and values), never on the raw text, so a value
with a quote in it cannot change the document's structure. ``${VAR}`` must be defined (the process
environment wins over ``.env``); ``$VAR`` that is not defined is left alone, because manifests use
``$edgeAgent``, ``$upstream`` and ``$body.x`` themselves. ``$$`` is a literal ``$``.
Called by :mod:`outpost.builder.modules` (module.json) and :mod:`outpost.builder.deployment`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from outpost.errors import InputError

__all__ = ["TemplateError", "expand_document", "expand_variables", "load_env", "parse_dotenv"]

_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(InputError):
    """A placeholder could not be expanded; names the file and the JSON pointer (or line)."""

    def __init__(self, source: str, where: str, message: str) -> None:
        self.source = source
        self.where = where
        super().__init__(f"{source}: {where or '/'}: {message}")


def expand_variables(
    text: str,
    env: Mapping[str, str],
    *,
    source: str,
    where: str = "",
    modules: Mapping[str, Mapping[str, str]] | None = None,
    strict: bool = True,
) -> str:
    """Replace placeholders in one string.

    ``modules`` maps a module name to its image references: key ``""`` for ``${MODULES.name}`` and a
    platform key (``arm64v8``) for ``${MODULES.name.arm64v8}``. With ``strict``, an undefined ``${VAR}``
    is an error; otherwise it is left as written.
    """

    def replace(match: re.Match[str]) -> str:
        whole, braced, bare = match.group(0), match.group(1), match.group(2)
        if whole == "$$":
            return "$"
        if bare is not None:
            return env.get(bare, whole)
        name = braced.strip()
        if name.startswith("MODULES."):
            return _module_image(name, modules, source=source, where=where)
        if name.startswith("MODULEDIR"):
            raise TemplateError(source, where, f"{whole}: MODULEDIR placeholders are not supported; use MODULES.name")
        if not _NAME.match(name):
            raise TemplateError(source, where, f"{whole} is not a valid placeholder (expected ${{NAME}})")
        if name in env:
            return env[name]
        if strict:
            raise TemplateError(source, where, f"{whole} is not defined: set {name} in the environment or .env")
        return whole

    return _TOKEN.sub(replace, text)


def _module_image(name: str, modules: Mapping[str, Mapping[str, str]] | None, *, source: str, where: str) -> str:
    parts = name.split(".")
    if modules is None:
        raise TemplateError(source, where, f"${{{name}}} can only be used in a deployment template")
    if len(parts) not in (2, 3) or not parts[1]:
        raise TemplateError(source, where, f"${{{name}}}: expected ${{MODULES.name}} or ${{MODULES.name.platform}}")
    module, platform = parts[1], (parts[2] if len(parts) == 3 else "")
    if module not in modules:
        known = ", ".join(sorted(modules)) or "none"
        raise TemplateError(source, where, f"${{{name}}}: module {module!r} was not built in this run (built: {known})")
    images = modules[module]
    if platform not in images:
        have = ", ".join(sorted(k for k in images if k)) or "none"
        raise TemplateError(source, where, f"${{{name}}}: no {platform!r} image of {module} (platforms: {have})")
    return images[platform]


def expand_document(
    doc: Any,
    env: Mapping[str, str],
    *,
    source: str,
    modules: Mapping[str, Mapping[str, str]] | None = None,
    strict: bool = True,
    _pointer: str = "",
) -> Any:
    """A copy of a parsed JSON document with every string (keys too) expanded."""

    def expand(text: str, where: str) -> str:
        return expand_variables(text, env, source=source, where=where, modules=modules, strict=strict)

    if isinstance(doc, str):
        return expand(doc, _pointer)
    if isinstance(doc, list):
        return [
            expand_document(item, env, source=source, modules=modules, strict=strict, _pointer=f"{_pointer}/{i}")
            for i, item in enumerate(doc)
        ]
    if isinstance(doc, dict):
        result: dict[str, Any] = {}
        for key, value in doc.items():
            where = f"{_pointer}/{key.replace('~', '~0').replace('/', '~1')}"
            result[expand(key, where)] = expand_document(
                value, env, source=source, modules=modules, strict=strict, _pointer=where
            )
        return result
    return doc


def parse_dotenv(text: str, *, source: str = ".env") -> dict[str, str]:
    """``KEY=value`` lines (``export`` prefix, quotes and ``#`` comments allowed) as a dict."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not _NAME.match(key):
            raise TemplateError(source, f"line {number}", "expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        result[key] = value
    return result


def load_env(dotenv: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """``.env`` (if it exists) overlaid with the process environment, which wins."""
    values: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        values = parse_dotenv(dotenv.read_text(encoding="utf-8"), source=str(dotenv))
    return {**values, **environ}
