"""The built-in functions of target conditions (IoT Hub's query language on twins).

Names are case-insensitive; arity is checked when a condition is compiled, so a typo
fails at deployment time instead of silently never matching. Each implementation is
total: operands of the wrong type give ``UNDEFINED``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from outpost.lang.runtime import NUM, number_or_undefined, wire_num
from outpost.lang.values import UNDEFINED

__all__ = ["FUNCTIONS", "Function"]

U: Final = UNDEFINED
_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class Function:
    """A built-in: arity bounds (``max_args`` None = variadic)."""

    name: str
    min_args: int
    max_args: int | None
    impl: Callable[..., object]

    def arity_text(self) -> str:
        """The accepted argument count in words, for error messages."""
        if self.max_args is None:
            return f"at least {self.min_args} arguments"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument" + ("" if self.min_args == 1 else "s")
        return f"{self.min_args} to {self.max_args} arguments"


def _is_defined(v: object) -> bool:
    return v is not U


def _is_null(v: object) -> bool:
    return v is None


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_number(v: object) -> bool:
    return type(v) in NUM


def _is_string(v: object) -> bool:
    return type(v) is str


def _is_array(v: object) -> bool:
    return type(v) is list


def _is_object(v: object) -> bool:
    return type(v) is dict


def _is_primitive(v: object) -> bool:
    return v is None or type(v) in NUM or type(v) is str or type(v) is bool


def _as_number(v: object) -> object:
    return wire_num(v)


def _numeric(fn: Callable[[float], object]) -> Callable[[object], object]:
    def apply(v: object) -> object:
        if type(v) not in NUM:
            return U
        try:
            return number_or_undefined(fn(v))  # type: ignore[arg-type]
        except (ArithmeticError, ValueError):
            return U

    return apply


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _power(x: object, y: object) -> object:
    if type(x) not in NUM or type(y) not in NUM:
        return U
    try:
        if type(x) is int and type(y) is int and 0 <= y <= 64:
            return x**y
        return number_or_undefined(math.pow(x, y))  # type: ignore[arg-type]
    except (ArithmeticError, ValueError):
        return U


def _square(x: float) -> object:
    return x * x


def _concat(*parts: object) -> object:
    if all(type(p) is str for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    return U


def _length(s: object) -> object:
    return len(s) if type(s) is str else U


def _lower(s: object) -> object:
    return s.lower() if type(s) is str else U


def _upper(s: object) -> object:
    return s.upper() if type(s) is str else U


def _index(v: object) -> int | None:
    """A non-negative whole-number argument as an int, else None."""
    if type(v) is int:
        return v if v >= 0 else None
    if type(v) is float and v.is_integer() and v >= 0:
        return int(v)
    return None


def _substring(s: object, start: object, length: object = _ABSENT) -> object:
    if type(s) is not str:
        return U
    begin = _index(start)
    if begin is None:
        return U
    if length is _ABSENT:
        return s[begin:]
    count = _index(length)
    return U if count is None else s[begin : begin + count]


def _index_of(s: object, fragment: object) -> object:
    if type(s) is str and type(fragment) is str:
        return s.find(fragment)
    return U


def _two_strings(test: Callable[[str, str], bool]) -> Callable[[object, object], object]:
    def apply(s: object, t: object) -> object:
        return test(s, t) if type(s) is str and type(t) is str else U

    return apply


def _make(name: str, lo: int, hi: int | None, impl: Callable[..., object]) -> Function:
    return Function(name, lo, hi, impl)


_TABLE: Final = (
    _make("IS_DEFINED", 1, 1, _is_defined),
    _make("IS_NULL", 1, 1, _is_null),
    _make("IS_BOOL", 1, 1, _is_bool),
    _make("IS_NUMBER", 1, 1, _is_number),
    _make("IS_STRING", 1, 1, _is_string),
    _make("IS_ARRAY", 1, 1, _is_array),
    _make("IS_OBJECT", 1, 1, _is_object),
    _make("IS_PRIMITIVE", 1, 1, _is_primitive),
    _make("AS_NUMBER", 1, 1, _as_number),
    _make("ABS", 1, 1, _numeric(abs)),
    _make("EXP", 1, 1, _numeric(math.exp)),
    _make("POWER", 2, 2, _power),
    _make("SQUARE", 1, 1, _numeric(_square)),
    _make("CEILING", 1, 1, _numeric(math.ceil)),
    _make("FLOOR", 1, 1, _numeric(math.floor)),
    _make("SIGN", 1, 1, _numeric(_sign)),
    _make("SQRT", 1, 1, _numeric(math.sqrt)),
    _make("CONCAT", 2, None, _concat),
    _make("LENGTH", 1, 1, _length),
    _make("LOWER", 1, 1, _lower),
    _make("UPPER", 1, 1, _upper),
    _make("SUBSTRING", 2, 3, _substring),
    _make("INDEX_OF", 2, 2, _index_of),
    _make("STARTS_WITH", 2, 2, _two_strings(str.startswith)),
    _make("ENDS_WITH", 2, 2, _two_strings(str.endswith)),
    _make("CONTAINS", 2, 2, _two_strings(str.__contains__)),
)

FUNCTIONS: Final[Mapping[str, Function]] = {f.name: f for f in _TABLE}
