"""Operators of the target-condition language, as total functions over JSON values.

Generated evaluators (see ``compiler.py``) call these. Every function returns
``UNDEFINED`` instead of raising when its operands do not fit, so an evaluator never
raises on any twin: IoT Hub treats a bad operand as *undefined*, not as an error.
Route conditions follow edgeHub's rules instead (``semantics.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from outpost.lang.values import UNDEFINED

__all__ = [
    "ARITHMETIC",
    "COMPARATORS",
    "NUM",
    "add",
    "ci_get",
    "compare",
    "div",
    "member",
    "mod",
    "mul",
    "neg",
    "number_or_undefined",
    "sub",
    "walk",
    "wire_num",
]

U: Final = UNDEFINED
NUM: Final = frozenset({int, float})
_PRIMITIVE_EQ: Final = frozenset({str, bool, type(None)})
_WIRE_NUMBER: Final = re.compile(r"[+-]?(?:(\d+)|\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][+-]?\d+|\.\d+[eE][+-]?\d+)")


def ci_get(mapping: object, key: str) -> object:
    """Case-insensitive lookup, tried after an exact miss (IoT Hub names are case-insensitive)."""
    if not isinstance(mapping, Mapping):
        return U
    folded = key.casefold()
    for name, value in mapping.items():
        if type(name) is str and name.casefold() == folded:
            return value
    return U


def walk(value: object, steps: Sequence[str | int]) -> object:
    """Follow object keys (``str``) and array indexes (``int``); undefined when a step is missing."""
    for step in steps:
        if type(step) is str:
            if type(value) is not dict:
                return U
            found = value.get(step, U)
            value = ci_get(value, step) if found is U else found
        elif type(value) is list and type(step) is int and step < len(value):
            value = value[step]
        else:
            return U
    return value


def number_or_undefined(value: object) -> object:
    """A finite ``int``/``float`` result, or undefined (JSON has no NaN or infinity)."""
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value):
        return value
    return U


def wire_num(value: object) -> object:
    """A string read as a number (``AS_NUMBER``): ``"5"`` -> 5, ``"2.5e1"`` -> 25.0; else undefined."""
    if type(value) is not str:
        return value if type(value) in NUM else U
    text = value.strip()
    match = _WIRE_NUMBER.fullmatch(text)
    if match is None:
        return U
    try:
        return int(text) if match.group(1) is not None else number_or_undefined(float(text))
    except ValueError:  # more digits than int() accepts
        return number_or_undefined(float(text))


def _eq(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if ta in NUM and tb in NUM:
        return a == b
    if ta is tb and ta in _PRIMITIVE_EQ:
        return a == b
    return U


def _lt(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if (ta in NUM and tb in NUM) or (ta is str and tb is str):
        return a < b  # type: ignore[operator]
    return U


def _le(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if (ta in NUM and tb in NUM) or (ta is str and tb is str):
        return a <= b  # type: ignore[operator]
    return U


def _gt(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if (ta in NUM and tb in NUM) or (ta is str and tb is str):
        return a > b  # type: ignore[operator]
    return U


def _ge(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if (ta in NUM and tb in NUM) or (ta is str and tb is str):
        return a >= b  # type: ignore[operator]
    return U


def _ne(a: object, b: object) -> object:
    result = _eq(a, b)
    return result if result is U else not result


COMPARATORS: Final[Mapping[str, Callable[[object, object], object]]] = {
    "=": _eq,
    "!=": _ne,
    "<>": _ne,
    "<": _lt,
    "<=": _le,
    ">": _gt,
    ">=": _ge,
}


def compare(op: str, a: object, b: object) -> object:
    """``a op b`` for JSON values: same-type primitives only (numbers mix); else undefined."""
    return COMPARATORS[op](a, b)


def member(value: object, items: Sequence[object]) -> object:
    """``value IN (items)``: true if any item equals it, false if all differ, else undefined."""
    result: object = False
    for item in items:
        found = _eq(value, item)
        if found is True:
            return True
        if found is U:
            result = U
    return result


def add(a: object, b: object) -> object:
    """``a + b`` on numbers only (strings join with CONCAT, as in IoT Hub)."""
    if type(a) in NUM and type(b) in NUM:
        return number_or_undefined(a + b)  # type: ignore[operator]
    return U


def sub(a: object, b: object) -> object:
    """``a - b`` on numbers."""
    if type(a) in NUM and type(b) in NUM:
        return number_or_undefined(a - b)  # type: ignore[operator]
    return U


def mul(a: object, b: object) -> object:
    """``a * b`` on numbers."""
    if type(a) in NUM and type(b) in NUM:
        return number_or_undefined(a * b)  # type: ignore[operator]
    return U


def div(a: object, b: object) -> object:
    """``a / b`` on numbers; always a float, as in JSON; division by zero is undefined."""
    if type(a) in NUM and type(b) in NUM and b != 0:
        try:
            return number_or_undefined(a / b)  # type: ignore[operator]
        except OverflowError:
            return U
    return U


def mod(a: object, b: object) -> object:
    """``a % b`` on numbers with the sign of the dividend (as in C# and SQL); ``x % 0`` is undefined."""
    if type(a) in NUM and type(b) in NUM and b != 0:
        if type(a) is int and type(b) is int:
            result = abs(a) % abs(b)
            return -result if a < 0 else result
        return number_or_undefined(math.fmod(a, b))  # type: ignore[arg-type]
    return U


def neg(a: object) -> object:
    """Unary minus on a number."""
    return -a if type(a) in NUM else U  # type: ignore[operator]


ARITHMETIC: Final[Mapping[str, Callable[[object, object], object]]] = {
    "+": add,
    "-": sub,
    "*": mul,
    "/": div,
    "%": mod,
}
