"""Turn jsonschema's errors into :class:`~outpost.errors.Problem` sentences people can act on.

jsonschema's own messages quote Python reprs and say nothing of what is allowed; users
see these instead (``'sometimes' is not one of never, on-failure, on-unhealthy, always``).
Called by ``validation`` only.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

from jsonschema import ValidationError

from outpost.errors import Problem
from outpost.manifest import schemas
from outpost.manifest.pointers import join

__all__ = ["from_schema_errors"]

_JSON_TYPES = {
    dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null",
}  # fmt: skip


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    text = "'" + value + "'" if isinstance(value, str) else text
    return text if len(text) <= 60 else text[:57] + "..."


def _words(values: Iterable[Any]) -> str:
    shown = [str(v) if isinstance(v, str) else json.dumps(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _choices(values: Iterable[Any]) -> str:
    """Allowed enum values as documented: ``never, on-failure, on-unhealthy, always``."""
    return ", ".join(str(v) if isinstance(v, str) else json.dumps(v) for v in values)


def _allowed(node: dict[str, Any], schema_file: str) -> str:
    """A short phrase saying what a schema node allows, for 'missing' messages."""
    node = schemas.resolve(node, schema_file)
    if "enum" in node:
        return f"one of {_choices(node['enum'])}"
    if "const" in node:
        return _show(node["const"])
    kinds = node.get("type")
    if isinstance(kinds, list):
        return "a " + " or ".join(kinds)
    if isinstance(kinds, str):
        return f"a{'n' if kinds[0] in 'aeiou' else ''} {kinds}"
    return "a value"


def _one(error: ValidationError, base: str, schema_file: str) -> list[Problem]:
    where = join(base, *error.absolute_path)
    instance: Any = error.instance
    value: Any = error.validator_value
    kind = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if "propertyNames" in error.relative_schema_path:
        return [Problem(join(where, str(instance)), _bad_name(str(instance), schema))]
    if kind == "required":
        props = schema.get("properties", {})
        return [
            Problem(
                join(where, field), f"is required but missing; expected {_allowed(props.get(field, {}), schema_file)}"
            )
            for field in value
            if isinstance(instance, dict) and field not in instance
        ]
    if kind == "additionalProperties" and value is False:
        known = sorted(schema.get("properties", {}))
        extra = [key for key in instance if key not in schema.get("properties", {})]
        problems = []
        for key in extra:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(Problem(join(where, key), f"unknown field; {hint}allowed: {', '.join(known)}"))
        return problems
    if kind == "oneOf":
        return _one_of(error, base, schema_file)
    return [Problem(where, _sentence(kind, value, instance, schema))]


def _bad_name(name: str, schema: dict[str, Any]) -> str:
    if "pattern" in schema and "a-zA-Z0-9_.-" in str(schema["pattern"]):
        return f"module name '{name}' is invalid: use only letters, digits, '_', '.' and '-' (1 to 64 characters)"
    if "properties" in str(schema.get("pattern", "")):
        return f"key '{name}' is not allowed here: use 'properties.desired' or 'properties.desired.<path>'"
    if "description" in schema:
        return f"name '{name}' {schema['description']}"
    return f"name '{name}' is not allowed here"


def _one_of(error: ValidationError, base: str, schema_file: str) -> list[Problem]:
    """Report the branch that matches the value's JSON type, not every branch's complaint."""
    branches = error.validator_value if isinstance(error.validator_value, list) else []
    for index, raw in enumerate(branches):
        declared = schemas.resolve(raw, schema_file).get("type")
        if declared == _kind(error.instance):
            inner = [e for e in error.context or [] if e.schema_path and e.schema_path[0] == index]
            if inner:
                return from_schema_errors(inner, base, schema_file)
    if all("required" in schemas.resolve(b, schema_file) for b in branches):
        names = [schemas.resolve(b, schema_file)["required"][0] for b in branches]
        where = join(base, *error.absolute_path)
        return [Problem(where, f"give exactly one of {_words(names)}")]
    kinds = [schemas.resolve(b, schema_file).get("type", "value") for b in branches]
    where = join(base, *error.absolute_path)
    return [Problem(where, f"expected {_words(kinds)}, got {_kind(error.instance)} {_show(error.instance)}")]


def _sentence(kind: str, value: Any, instance: Any, schema: dict[str, Any]) -> str:
    match kind:
        case "enum":
            if isinstance(value, list) and {_kind(v) for v in value} == {"string"} and not isinstance(instance, str):
                return f"expected a string, one of {_choices(value)}; got {_kind(instance)} {_show(instance)}"
            return f"{_show(instance)} is not one of {_choices(value)}"
        case "const":
            why = f" ({schema['description']})" if "description" in schema else ""
            return f"must be {_show(value)}{why}, not {_show(instance)}"
        case "type":
            wanted = " or ".join(value) if isinstance(value, list) else value
            return f"expected {wanted}, got {_kind(instance)} {_show(instance)}"
        case "minimum":
            return f"{_show(instance)} is below the minimum {value}"
        case "maximum":
            return f"{_show(instance)} is above the maximum {value}"
        case "exclusiveMinimum":
            return f"must be greater than {value}, got {_show(instance)}"
        case "minLength":
            return "must not be empty" if value == 1 else f"must be at least {value} characters long"
        case "maxLength":
            return f"is {len(instance)} characters long; at most {value} allowed"
        case "minItems":
            return f"must have at least {value} item{'s' if value != 1 else ''}"
        case "pattern":
            if "description" in schema:
                return f"{_show(instance)} {schema['description']}"
            return f"{_show(instance)} does not match the required pattern {value}"
    return f"{_show(instance)} is invalid ({kind})"


def from_schema_errors(errors: Iterable[ValidationError], base: str, schema_file: str) -> list[Problem]:
    """Every schema error as Problems, pointers prefixed with ``base``, duplicates removed."""
    problems: list[Problem] = []
    for error in errors:
        for problem in _one(error, base, schema_file):
            if problem not in problems:
                problems.append(problem)
    return problems
