"""edgeHub's run-time semantics for route conditions, as total Python functions.

edgeHub types every expression when it compiles a route (see ``emitter.py``); values then
live in one of six representations, and generated code calls the helpers here:

* number (``D``): a ``float``; NaN means undefined (C# ``double``; ``3 / 0`` is infinity);
* string (``S``): a ``str``, ``None`` for a property whose value is null, or ``UNDEFINED``;
* Boolean (``B``): ``True``, ``False`` or ``UNDEFINED`` (edgeHub's three-valued ``Bool``);
* null (``N``) and undefined (``U``): ``None`` and ``UNDEFINED``;
* query value (``Q``, a ``$body`` value): ``float``, ``str``, ``bool``, ``None`` (JSON null),
  ``MISSING`` (no such path: edgeHub answers null, but a different null, see ``is_null``),
  ``NULL_STRING`` (a null property converted) or ``UNDEFINED``.

Query values of different kinds compare by kind (Bool < number < string < null), as
edgeHub's ``QueryValue.CompareTo`` does: ``$body.temperature <> 'hot'`` is true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final

from outpost.lang.message import RoutingMessage
from outpost.lang.values import UNDEFINED

__all__ = ["MISSING", "NAN", "NULL_STRING", "body_query"]

U: Final = UNDEFINED
NAN: Final = math.nan
INF: Final = math.inf


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Final = _Marker("MISSING")
"""The query value of a ``$body`` path that is not there (edgeHub's ``QueryValue.Null`` instance)."""
NULL_STRING: Final = _Marker("NULL_STRING")
"""A null string as a query value (a property whose value is null, converted)."""

# --- conversions to a query value -------------------------------------------------------


def q_of_d(x: float) -> object:
    return U if x != x else x  # noqa: PLR0124


def q_of_s(x: object) -> object:
    return NULL_STRING if x is None else x


def _kind(v: object) -> int:
    """edgeHub's QueryValueType order: None 0, Bool 1, Double 2, String 3, Null 4."""
    t = type(v)
    if t is float:
        return 2
    if t is str or v is NULL_STRING:
        return 3
    if t is bool:
        return 1
    if v is None or v is MISSING:
        return 4
    return 0


def _order(a: object, b: object) -> int:
    """``QueryValue.CompareTo`` for two defined query values."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return -1 if ka < kb else 1
    if ka == 2:  # double.CompareTo: NaN is below everything and equal to itself
        if a < b:  # type: ignore[operator]
            return -1
        if a > b:  # type: ignore[operator]
            return 1
        if a == b:
            return 0
        a_nan, b_nan = a != a, b != b  # noqa: PLR0124
        return 0 if a_nan and b_nan else (-1 if a_nan else 1)
    if ka == 3:
        if a is NULL_STRING or b is NULL_STRING:
            return 0 if a is b else (-1 if a is NULL_STRING else 1)
        return -1 if a < b else (1 if a > b else 0)  # type: ignore[operator]
    if ka == 1:
        return (a > b) - (a < b)  # type: ignore[operator,no-any-return]
    return 0


_FROM_ORDER: Final[Mapping[str, Callable[[int], bool]]] = {
    "=": lambda c: c == 0,
    "!=": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def q_compare(op: str, a: object, b: object) -> object:
    """``Compare(op, QueryValue, QueryValue)``: undefined if either is; else by kind, then value."""
    if a is U or b is U:
        return U
    return _FROM_ORDER[op](_order(a, b))


def d_compare(op: str, a: float, b: float) -> object:
    if a != a or b != b:  # noqa: PLR0124
        return U
    return _FROM_ORDER[op](-1 if a < b else (1 if a > b else 0))


def s_compare(op: str, a: object, b: object) -> object:
    if a is U or b is U or a is None or b is None:
        return U
    return _FROM_ORDER[op](-1 if a < b else (1 if a > b else 0))  # type: ignore[operator]


def b_compare(op: str, a: object, b: object) -> object:
    if a is U or b is U:
        return U
    return _FROM_ORDER[op]((a > b) - (a < b))  # type: ignore[operator]


def n_compare(op: str, _a: object, _b: object) -> object:
    return op in ("=", "<=", ">=")


def u_compare(_op: str, _a: object, _b: object) -> object:
    return U


# --- arithmetic (C# double) -------------------------------------------------------------


def d_div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:  # noqa: PLR0124
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)


def d_mod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:  # x % 0, infinity % x
        return NAN


def q_add(a: object, b: object) -> object:
    return a + b if type(a) is float and type(b) is float else U


def q_sub(a: object, b: object) -> object:
    return a - b if type(a) is float and type(b) is float else U


def q_mul(a: object, b: object) -> object:
    return a * b if type(a) is float and type(b) is float else U


def q_div(a: object, b: object) -> object:
    return d_div(a, b) if type(a) is float and type(b) is float else U


# --- logic ------------------------------------------------------------------------------


def and3(a: object, b: object) -> object:
    if a is False or b is False:
        return False
    return True if a is True and b is True else U


def or3(a: object, b: object) -> object:
    if a is True or b is True:
        return True
    return False if a is False and b is False else U


def not3(a: object) -> object:
    return U if a is U else not a


def q_and(a: object, b: object) -> object:
    return (a and b) if type(a) is bool and type(b) is bool else U


def q_or(a: object, b: object) -> object:
    return (a or b) if type(a) is bool and type(b) is bool else U


def q_not(a: object) -> object:
    return (not a) if type(a) is bool else U


def q_bool(a: object) -> object:
    """``(Bool)QueryValue``: the Boolean, or undefined for anything else."""
    return a if type(a) is bool else U


# --- message reads ----------------------------------------------------------------------

_DATE: Final = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,7})?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_MS_DATE: Final = re.compile(r"/Date\(-?[0-9]+(?:[+-][0-9]{4})?\)/")


def _is_date(text: str) -> bool:
    """Whether Json.NET reads this string as a date (then edgeHub's body query is undefined)."""
    if 19 <= len(text) <= 40 and text[10:11] == "T" and text[0].isdigit():
        return _DATE.fullmatch(text) is not None
    return text[:6] == "/Date(" and _MS_DATE.fullmatch(text) is not None


def leaf(value: object) -> object:
    """A selected JSON token as a query value: objects and arrays (and dates) are undefined."""
    kind = type(value)
    if kind is float or kind is bool or value is None or value is MISSING:
        return value
    if kind is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            return math.copysign(INF, value)  # type: ignore[arg-type]
    if kind is str:
        return U if _is_date(value) else value  # type: ignore[arg-type]
    return U


def body_query(message: RoutingMessage, steps: tuple[str | int, ...]) -> object:
    """The query value of ``$body.<steps>``: undefined unless the body is a JSON object."""
    document = message.json_body()
    if type(document) is not dict:
        return U
    value: object = document
    for step in steps:
        if type(step) is str:
            if type(value) is not dict:
                return MISSING
            value = value.get(step, MISSING)
            if value is MISSING:
                return MISSING
        elif type(value) is list and step < len(value):  # type: ignore[operator]
            value = value[step]  # type: ignore[index]
        else:
            return MISSING
    return leaf(value)


def dollar_property(properties: Mapping[str, object], key: str, lowered: str) -> object:
    """The application property named ``key`` (``$...``), in any case, or undefined.

    edgeHub lets such a property stand in for a ``$body`` query or a system property;
    only names starting with '$' can match, so the scan is short.
    """
    value = properties.get(key, U)
    if value is U:
        for name in properties:
            if name[:1] == "$" and name.lower() == lowered:
                return properties[name]
    return value


def property_ci(properties: Mapping[str, object], lowered: str) -> object:
    """A property by case-insensitive name (edgeHub's dictionaries ignore case), after an exact miss."""
    for name in properties:
        if name.lower() == lowered:
            return properties[name]
    return U


# --- built-in functions on query values -------------------------------------------------


def f_abs(x: object) -> float:
    return abs(x) if type(x) is float else NAN


def f_exp(x: object) -> float:
    if type(x) is not float:
        return NAN
    try:
        return math.exp(x)
    except OverflowError:
        return INF


def f_ceiling(x: object) -> float:
    if type(x) is not float or not math.isfinite(x):
        return x if type(x) is float else NAN
    return float(math.ceil(x))


def f_floor(x: object) -> float:
    if type(x) is not float or not math.isfinite(x):
        return x if type(x) is float else NAN
    return float(math.floor(x))


def f_sign(x: object) -> float:
    if type(x) is not float or x != x:  # noqa: PLR0124
        return NAN
    return float((x > 0) - (x < 0))


def f_sqrt(x: object) -> float:
    if type(x) is not float or x != x or x < 0:  # noqa: PLR0124
        return NAN
    return math.sqrt(x)


def _pow(x: float, y: float) -> float:
    """C# Math.Pow: never raises; overflow is infinity, a negative base with a fraction NaN."""
    try:
        return math.pow(x, y)
    except OverflowError:
        odd = y.is_integer() and int(y) % 2 == 1
        return -INF if x < 0 and odd else INF
    except ValueError:
        if x == 0 and y < 0:
            odd = y.is_integer() and int(y) % 2 == 1
            return -INF if odd and math.copysign(1.0, x) < 0 else INF
        return NAN


def f_square(x: object) -> float:
    if type(x) is not float or x != x:  # noqa: PLR0124
        return NAN
    return _pow(x, 2.0)


def f_power(x: object, y: object) -> float:
    if type(x) is not float or type(y) is not float:
        return NAN
    return _pow(x, y)


_NUMBER: Final = re.compile(r"[0-9]*(?:,[0-9]+)*\.?[0-9]*(?:[eE][+-]?[0-9]+)?")


def parse_number(text: str) -> float:
    """C# ``double.TryParse(text, NumberStyles.Any, InvariantCulture)``; NaN when it fails."""
    s = text.strip(" \t\n\v\f\r")
    negative = False
    if s.startswith("(") and s.endswith(")"):
        s, negative = s[1:-1], True
    s = s.replace("\u00a4", "").strip(" \t\n\v\f\r")  # the invariant currency symbol
    if s[:1] in ("+", "-"):
        negative, s = negative ^ (s[0] == "-"), s[1:]
    elif s[-1:] in ("+", "-"):
        negative, s = negative ^ (s[-1] == "-"), s[:-1]
    lowered = s.lower()
    if lowered in ("infinity", "\u221e"):
        return -INF if negative else INF
    if lowered == "nan":
        return NAN
    if not s or _NUMBER.fullmatch(s) is None or not any(c.isdigit() for c in s.split("e")[0].split("E")[0]):
        return NAN
    try:
        value = float(s.replace(",", ""))
    except ValueError:
        return NAN
    return -value if negative else value


def f_as_number(x: object) -> float:
    if type(x) is float:
        return x
    if type(x) is str:
        return parse_number(x)
    return NAN


def _utf16_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def f_length(x: object) -> float:
    return float(_utf16_length(x)) if type(x) is str else NAN


def _invariant(text: str, upper: bool) -> str:
    """ToUpperInvariant/ToLowerInvariant: one character for one (Python's ß -> SS does not happen)."""
    if text.isascii():
        return text.upper() if upper else text.lower()
    changed = (c.upper() if upper else c.lower() for c in text)
    return "".join(new if len(new) == 1 else old for new, old in zip(changed, text, strict=True))


def f_lower(x: object) -> object:
    return _invariant(x, False) if type(x) is str else U


def f_upper(x: object) -> object:
    return _invariant(x, True) if type(x) is str else U


def f_concat(*parts: object) -> object:
    if all(type(p) is str or p is NULL_STRING for p in parts):
        return "".join(p if type(p) is str else "" for p in parts)
    return U


def f_substring(s: object, start: object, length: object = MISSING) -> object:
    if type(s) is not str or type(start) is not float:
        return U
    if length is MISSING:
        return s[int(start) :] if 0 <= start <= len(s) else U
    if type(length) is not float:
        return U
    size = len(s)
    if 0 <= start < size and 0 <= length <= size - start:
        begin = int(start)
        return s[begin : begin + int(length)]
    return U


def f_index_of(s: object, fragment: object) -> float:
    if type(s) is str and type(fragment) is str:
        return float(s.find(fragment))
    return NAN


def _two_strings(test: Callable[[str, str], bool]) -> Callable[[object, object], object]:
    def apply(s: object, t: object) -> object:
        return test(s, t) if type(s) is str and type(t) is str else U

    return apply


f_starts_with: Final = _two_strings(str.startswith)
f_ends_with: Final = _two_strings(str.endswith)
f_contains: Final = _two_strings(str.__contains__)


def f_is_number(x: object) -> bool:
    return type(x) is float and math.isfinite(x)


def f_is_string(x: object) -> bool:
    return type(x) is str


def f_is_bool(x: object) -> object:
    if x is U:
        return U
    return type(x) is bool


def f_is_null_q(x: object) -> object:
    """edgeHub compares with the ``QueryValue.Null`` instance by reference: a present value, even null, is true."""
    if x is U:
        return U
    return x is not MISSING
