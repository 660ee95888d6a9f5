"""edgeHub's static typing of route conditions, and Python code that evaluates them.

edgeHub compiles a condition to a typed .NET expression tree (``ConditionVisitor`` in
Azure/iotedge). Every node has a static type: number, string (every property is one),
Boolean, null, undefined or query value (a ``$body`` value, typed at run time), and each
operator accepts only some pairs: ``3 + key`` (a number and a string), ``NOT key``,
``length(12.34)`` or ``null_value AND undefined`` are refused when the route is deployed.
This module applies the same rules, raising QueryError where edgeHub fails, and emits one
Python expression per condition whose helpers (``semantics.py``) follow edgeHub's run-time
rules. Generated code refers to values only by name (``K0``...), never splices text.

Outpost keeps two documented extensions (docs/languages.md, "Deviations"); they apply
only where edgeHub refuses the condition, and each use is reported as a ``Note``:
``number-property`` (a property next to a number is read with AS_NUMBER) and ``in-list``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from outpost.errors import QueryError
from outpost.lang import semantics
from outpost.lang.lexer import Token
from outpost.lang.message import UNSET
from outpost.lang.parser import error_at
from outpost.lang.syntax import Binary, Call, Expr, Literal, Property, SystemProperty, Unary
from outpost.lang.values import UNDEFINED

__all__ = ["Emitted", "Note", "emit"]

NUMBER_PROPERTY: Final = "number-property"
IN_LIST: Final = "in-list"


@dataclass(frozen=True, slots=True)
class Note:
    """Something to tell the user: ``deviation`` names a documented Outpost extension, else None."""

    message: str
    deviation: str | None = None

    def __str__(self) -> str:
        if self.deviation is None:
            return self.message
        return f"Outpost extension '{self.deviation}' (edgeHub refuses this; docs/languages.md): {self.message}"


class Emitted(NamedTuple):
    """A typed expression: its edgeHub type, its Python code, and whether it reads a property string."""

    type: str
    code: str
    wire: bool = False


_NAMES: Final = {
    "D": "a number",
    "S": "a string",
    "B": "a Boolean",
    "N": "null",
    "U": "undefined",
    "Q": "a $body value",
}
_SUPPORTED: Final = frozenset({"N", "D", "S", "B"})
_TO_Q: Final = {"D": "q_of_d({})", "S": "q_of_s({})", "B": "{}", "N": "None", "U": "U", "Q": "{}"}
_ARITH_D: Final = {"+": "({} + {})", "-": "({} - {})", "*": "({} * {})", "/": "d_div({}, {})", "%": "d_mod({}, {})"}
_ARITH_Q: Final = {"+": "q_add", "-": "q_sub", "*": "q_mul", "/": "q_div"}
_COMPARE: Final = {"D": "d_compare", "S": "s_compare", "B": "b_compare", "N": "n_compare", "U": "u_compare"}
_PY_OP: Final = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TO_BOOL: Final = {"B": "{}", "D": "U", "S": "U", "N": "False", "U": "U", "Q": "q_bool({})"}

# name -> executors in edgeHub's order: (argument types | "ANY" | "VAR", query values accepted,
# result type, helper or constant code). See the builtins folder of Routing.Core.
Executor = tuple[tuple[str, ...] | str, bool, str, str]
_NUMERIC: Final = ("abs", "exp", "ceiling", "floor", "sign", "sqrt", "square")
BUILTINS: Final[dict[str, tuple[Executor, ...]]] = {
    **{name: ((("D",), True, "D", f"f_{name}"),) for name in _NUMERIC},
    "power": ((("D", "D"), True, "D", "f_power"),),
    "as_number": ((("S",), True, "D", "f_as_number"), (("D",), False, "D", "{0}")),
    "is_bool": ((("B",), True, "B", "f_is_bool({0})"), ("ANY", False, "B", "False")),
    "is_defined": (
        (("S",), False, "B", "({0} is not U)"),
        (("D",), False, "B", "(({0}) == ({0}))"),
        (("B",), False, "B", "({0} is not U)"),
        (("U",), False, "B", "False"),
        (("N",), False, "B", "True"),
        (("Q",), False, "B", "({0} is not U)"),
    ),
    "is_null": (
        (("S",), False, "B", "({0} is None)"),
        (("Q",), False, "B", "f_is_null_q({0})"),
        (("N",), False, "B", "True"),
        ("ANY", False, "B", "False"),
    ),
    "is_number": ((("D",), True, "B", "f_is_number({0})"), ("ANY", False, "B", "False")),
    "is_string": ((("S",), True, "B", "f_is_string({0})"), ("ANY", False, "B", "False")),
    "concat": (("VAR", True, "S", "f_concat"),),
    "length": ((("S",), True, "D", "f_length"),),
    "lower": ((("S",), True, "S", "f_lower"),),
    "upper": ((("S",), True, "S", "f_upper"),),
    "substring": ((("S", "D"), True, "S", "f_substring"), (("S", "D", "D"), True, "S", "f_substring")),
    "index_of": ((("S", "S"), True, "D", "f_index_of"),),
    "starts_with": ((("S", "S"), True, "B", "f_starts_with"),),
    "ends_with": ((("S", "S"), True, "B", "f_ends_with"),),
    "contains": ((("S", "S"), True, "B", "f_contains"),),
}

NAMESPACE: Final[dict[str, object]] = {
    "__builtins__": {},
    "type": type,
    "str": str,
    "float": float,
    "dict": dict,
    "min": min,
    "Exception": Exception,
    "U": UNDEFINED,
    "leaf": semantics.leaf,
    "MISSING": semantics.MISSING,
    "UNSET": UNSET,
    "dollar_property": semantics.dollar_property,
    "property_ci": semantics.property_ci,
    **{
        name: getattr(semantics, name)
        for name in dir(semantics)
        if name[:2] in ("f_", "q_", "d_", "s_", "b_", "n_", "u_")
    },
    "and3": semantics.and3,
    "or3": semantics.or3,
    "not3": semantics.not3,
    "body_query": semantics.body_query,
}


def emit(text: str, expr: Expr) -> tuple[Emitted, dict[str, object], list[Note]]:
    """Type ``expr`` (parsed from ``text``) as edgeHub does; its code, the constants it names, and notes."""
    emitter = _Emitter(text)
    result = emitter.node(expr)
    return result, emitter.constants, emitter.notes


def to_bool(value: Emitted) -> str:
    """Code converting the root value to edgeHub's three-valued Boolean."""
    return _TO_BOOL[value.type].format(value.code)


class _Emitter:
    def __init__(self, text: str) -> None:
        self.text = text
        self.constants: dict[str, object] = {}
        self._keys: dict[tuple[type, object], str] = {}
        self._temps = 0
        self.notes: list[Note] = []

    # helpers ---------------------------------------------------------------------------

    def const(self, value: object) -> str:
        key = (type(value), value)
        name = self._keys.get(key)
        if name is None:
            name = self._keys[key] = f"K{len(self.constants)}"
            self.constants[name] = value
        return name

    def temp(self) -> str:
        self._temps += 1
        return f"t{self._temps}"

    def fail(self, token: Token, message: str) -> QueryError:
        return error_at(self.text, token.start, message)

    def note(self, message: str, deviation: str | None = None) -> None:
        found = Note(message, deviation)
        if found not in self.notes:
            self.notes.append(found)

    # nodes -----------------------------------------------------------------------------

    def node(self, expr: Expr) -> Emitted:
        if isinstance(expr, Literal):
            return self.literal(expr)
        if isinstance(expr, Property):
            return self.property(expr)
        if isinstance(expr, SystemProperty):
            return self.system(expr)
        if isinstance(expr, Call):
            return self.call(expr)
        if isinstance(expr, Unary):
            return self.unary(expr)
        return self.binary(expr)

    def literal(self, expr: Literal) -> Emitted:
        kind = expr.kind
        if kind == "B":
            return Emitted("B", repr(expr.value))
        if kind == "N":
            return Emitted("N", "None")
        if kind == "U":
            return Emitted("U", "U")
        return Emitted(kind, self.const(expr.value))

    def _app(self, name: str) -> str:
        t, k = self.temp(), self.const(name)
        if name[:1] == "$":
            # Names starting with '$' sort below '%': min() (in C) tells whether to scan at all.
            scan = f"(dollar_property(P, {k}, {self.const(name.lower())}) if P and min(P) < '%' else U)"
            return f"({t} if ({t} := P.get({k}, U)) is not U else {scan})"
        return f"({t} if ({t} := P.get({k}, U)) is not U else property_ci(P, {self.const(name.lower())}))"

    def _sys(self, name: str) -> str:
        t, k = self.temp(), self.const(name)
        return f"({t} if ({t} := S.get({k}, U)) is not U else property_ci(S, {self.const(name.lower())}))"

    def property(self, expr: Property) -> Emitted:
        if expr.name.lower() in ("true", "false", "null", "undefined"):
            self.note(
                f"{expr.name} is read as an application property named '{expr.name}'"
                f" (the literal is lowercase: {expr.name.lower()})"
            )
        return Emitted("S", self._app(expr.name), wire=True)

    def system(self, expr: SystemProperty) -> Emitted:
        name = expr.name
        brackets = "[" in name or "]" in name
        if name[:6].lower() == "$body.":
            query = self._body(name[6:], expr.token)
            if expr.escaped or brackets:
                return Emitted("Q", query)
            t = self.temp()
            return Emitted("Q", f"(q_of_s({t}) if ({t} := {self._app(name)}) is not U else {query})")
        if brackets:
            return Emitted("U", "U")
        if name[:6].lower() == "$twin.":
            self.note(f"{name} is not a twin query on the edge: edgeHub reads it as a property of that name")
        if expr.escaped:
            return Emitted("S", self._sys(name[1:]), wire=True)
        t = self.temp()
        return Emitted("S", f"({t} if ({t} := {self._app(name)}) is not U else {self._sys(name[1:])})", wire=True)

    def _body(self, path: str, token: Token) -> str:
        steps = body_path(path)
        if isinstance(steps, str):
            raise self.fail(token, f"error in $body query '{path}': {steps}")
        if steps is None:  # edgeHub accepts it but Json.NET cannot select it: always undefined
            return "U"
        if len(steps) == 1:  # the common $body.name, inlined: the decoded body, its field, a number
            d, v, k = self.temp(), self.temp(), self.const(steps[0])
            body = f"({d} if ({d} := m._json) is not UNSET else m.json_body())"
            field = f"({d}.get({k}, MISSING) if type({d} := {body}) is dict else U)"
            return f"({v} if type({v} := {field}) is float else leaf({v}))"
        return f"body_query(m, {self.const(steps)})"

    # functions -------------------------------------------------------------------------

    def call(self, expr: Call) -> Emitted:
        name = expr.name.lower()
        executors = BUILTINS.get(name)
        if executors is None:
            if name == "twin_change_includes":
                raise self.fail(
                    expr.token, "twin_change_includes is only available in routes from /twinChangeNotifications"
                )
            known = ", ".join(sorted(BUILTINS))
            raise self.fail(expr.token, f"unknown function {expr.name!r}; known: {known}")
        args = [self.node(arg) for arg in expr.args]
        types = tuple(arg.type for arg in args)
        for pattern, queries, result, impl in executors:
            if not _matches(pattern, queries, types):
                continue
            codes = [_TO_Q[a.type].format(a.code) if queries else a.code for a in args]
            if "{" in impl or impl in ("True", "False"):
                return Emitted(result, impl.format(*codes))
            return Emitted(result, f"{impl}({', '.join(codes)})")
        wanted = " or ".join(_signature(pattern) for pattern, *_ in executors)
        given = ", ".join(_NAMES[t] for t in types) or "nothing"
        raise self.fail(expr.token, f"{expr.name.upper()} takes {wanted}; got {given}")

    # operators -------------------------------------------------------------------------

    def unary(self, expr: Unary) -> Emitted:
        operand = self.node(expr.operand)
        if expr.op == "-":
            if operand.type == "D":
                return Emitted("D", f"(-{operand.code})")
            raise self.fail(expr.token, f"unary '-' needs a number; got {_NAMES[operand.type]}")
        if operand.type == "N":
            return Emitted("B", "True")  # edgeHub: NOT null is true
        if operand.type == "B":
            return Emitted("B", f"not3({operand.code})")
        if operand.type == "Q":
            return Emitted("B", f"q_bool(q_not({operand.code}))")
        raise self.fail(
            expr.token,
            f"NOT needs a Boolean; got {_NAMES[operand.type]} (NOT binds tighter than comparisons: write NOT (a = b))",
        )

    def binary(self, expr: Binary) -> Emitted:
        op = expr.op
        if op in ("AND", "OR"):
            chain = self.chain(expr)
            if chain is not None:
                return chain
        left, right = self.node(expr.left), self.node(expr.right)
        if op in ("AND", "OR"):
            return self.logical(expr, left, right)
        if op in _ARITH_D:
            return self.arithmetic(expr, left, right)
        if op == "||":
            if left.type in ("S", "Q") and right.type in ("S", "Q"):
                return Emitted(
                    "S", f"f_concat({_TO_Q[left.type].format(left.code)}, {_TO_Q[right.type].format(right.code)})"
                )
            raise self._operands(expr, "strings", left, right)
        if not _same_kind(left.type, right.type):
            if op != "??" and {left.type, right.type} == {"S", "D"} and (left.wire or right.wire):
                left, right = self._as_numbers(expr, left, right)
            else:
                raise self._operands(expr, f"two values of the same type ({_NAMES[left.type]})", left, right)
        if op == "??":
            return self.coalesce(left, right)
        return self.compare(expr, left, right)

    def _operands(self, expr: Binary, wanted: str, left: Emitted, right: Emitted) -> QueryError:
        hint = ""
        if "S" in (left.type, right.type) and {left.type, right.type} & {"D", "Q"}:
            hint = "; AS_NUMBER(x) reads a string as a number"
        return self.fail(
            expr.token,
            f"operator '{expr.token.text}' needs {wanted}; got {_NAMES[left.type]} and {_NAMES[right.type]}{hint}",
        )

    def _as_numbers(self, expr: Binary, left: Emitted, right: Emitted) -> tuple[Emitted, Emitted]:
        """Outpost's number-property extension: a property string where edgeHub wants a number."""
        converted = []
        for side, node in ((left, expr.left), (right, expr.right)):
            if side.type == "S" and side.wire:
                shown = _shown(node)
                self.note(
                    f"{shown} is a string; Outpost reads it as AS_NUMBER({shown}) next to '{expr.token.text}'."
                    f" Write AS_NUMBER({shown}) to run the same on edgeHub",
                    NUMBER_PROPERTY,
                )
                converted.append(Emitted("D", f"f_as_number(q_of_s({side.code}))"))
            else:
                converted.append(side)
        return converted[0], converted[1]

    def arithmetic(self, expr: Binary, left: Emitted, right: Emitted) -> Emitted:
        op = expr.op
        numeric = {"D", "Q"}
        if not (left.type in numeric and right.type in numeric):
            if {left.type, right.type} <= {"D", "Q", "S"} and all(
                side.type in numeric or side.wire for side in (left, right)
            ):
                left, right = self._as_numbers(expr, left, right)
            else:
                raise self._operands(expr, "numbers", left, right)
        if left.type == "D" and right.type == "D":
            return Emitted("D", _ARITH_D[op].format(left.code, right.code))
        if op == "%":
            raise self.fail(
                expr.token, "operator '%' is not defined for $body values in edgeHub; use AS_NUMBER(...) % n"
            )
        return Emitted(
            "Q", f"{_ARITH_Q[op]}({_TO_Q[left.type].format(left.code)}, {_TO_Q[right.type].format(right.code)})"
        )

    def compare(self, expr: Binary, left: Emitted, right: Emitted) -> Emitted:
        op = expr.op
        if "Q" in (left.type, right.type):
            a, b = _TO_Q[left.type].format(left.code), _TO_Q[right.type].format(right.code)
            literal = expr.right if isinstance(expr.right, Literal) and right.type in ("D", "S") else None
            if literal is not None and left.type == "Q" and isinstance(expr.left, SystemProperty):
                # a $body value (never NaN: it comes from JSON) against a literal of its kind
                t, kind = self.temp(), "float" if right.type == "D" else "str"
                fast = f"({t} {_PY_OP[op]} {right.code})"
                return Emitted("B", f"({fast} if type({t} := {a}) is {kind} else q_compare({op!r}, {t}, {right.code}))")
            return Emitted("B", f"q_compare({op!r}, {a}, {b})")
        kind = left.type
        if isinstance(expr.right, Literal) and kind in ("S", "D"):
            t = self.temp()
            guard = f"type({t} := {left.code}) is str" if kind == "S" else f"({t} := {left.code}) == {t}"
            return Emitted("B", f"(({t} {_PY_OP[op]} {right.code}) if {guard} else U)")
        return Emitted("B", f"{_COMPARE[kind]}({op!r}, {left.code}, {right.code})")

    def coalesce(self, left: Emitted, right: Emitted) -> Emitted:
        if left.type == "U":
            return right
        t = self.temp()
        if "Q" in (left.type, right.type):
            a, b = _TO_Q[left.type].format(left.code), _TO_Q[right.type].format(right.code)
            return Emitted("Q", f"({t} if ({t} := {a}) is not U else {b})")
        if left.type == "N":
            return left
        defined = f"({t} := {left.code}) == {t}" if left.type == "D" else f"({t} := {left.code}) is not U"
        return Emitted(left.type, f"({t} if {defined} else {right.code})", wire=left.wire and right.wire)

    def chain(self, expr: Binary) -> Emitted | None:
        """``a AND b AND c ...`` of Booleans as one flat expression (Kleene logic is associative).

        Long chains are common (``x = 1 OR x = 2 OR ...``); nesting them would exceed
        Python's parser limits. None when an operand is not a Boolean (pairwise rules apply).
        """
        spine: list[Expr] = []
        node: Expr = expr
        while isinstance(node, Binary) and node.op == expr.op:
            spine.append(node.right)
            node = node.left
        if len(spine) < 2:
            return None
        operands = [self.node(item) for item in [node, *reversed(spine)]]
        if any(operand.type not in ("B", "U") for operand in operands):
            return None
        decisive, other = ("False", "True") if expr.op == "AND" else ("True", "False")
        temps = [self.temp() for _ in operands]
        parts = [f"{decisive} if ({t} := {o.code}) is {decisive} else" for t, o in zip(temps, operands, strict=True)]
        every = " and ".join(f"{t} is {other}" for t in temps)
        return Emitted("B", f"({' '.join(parts)} {other} if {every} else U)")

    def logical(self, expr: Binary, left: Emitted, right: Emitted) -> Emitted:
        op = expr.op
        # edgeHub's CheckBooleanOperands, including its slip: the right operand may be
        # anything when the left one is a $body value, and a $body value on the right
        # of a Boolean is refused.
        left_ok = left.type in ("N", "B", "U", "Q")
        right_ok = right.type in ("N", "B", "U") or left.type == "Q"
        if not (left_ok and right_ok):
            raise self._operands(expr, "Booleans (a $body value only on the left)", left, right)
        if op == "AND":
            result = "N" if "N" in (left.type, right.type) else "B"
        else:
            result = "N" if left.type == right.type == "N" else "B"
        if "Q" in (left.type, right.type):
            if result == "N":
                raise self._operands(expr, "Booleans (a $body value cannot be combined with null)", left, right)
            helper = "q_and" if op == "AND" else "q_or"
            a, b = _TO_Q[left.type].format(left.code), _TO_Q[right.type].format(right.code)
            return Emitted("B", f"q_bool({helper}({a}, {b}))")
        types = {left.type, right.type}
        if types == {"N", "U"}:
            raise self._operands(expr, "Booleans (null cannot be combined with undefined)", left, right)
        if "N" in types:
            if result == "N":
                return Emitted("N", "None")
            return right if left.type == "N" else left  # null OR x is x
        a, b = self.temp(), self.temp()
        decisive, other = ("False", "True") if op == "AND" else ("True", "False")
        code = (
            f"({decisive} if ({a} := {left.code}) is {decisive} else {decisive} if ({b} := {right.code}) is {decisive}"
            f" else {other} if {a} is {other} and {b} is {other} else U)"
        )
        return Emitted("B", code)


def _same_kind(left: str, right: str) -> bool:
    """``Args(left, left).Match([left, right], true)``: equal, or a query value with a plain type."""
    return left == right or (left == "Q" and right in _SUPPORTED) or (right == "Q" and left in _SUPPORTED)


def _matches(pattern: tuple[str, ...] | str, queries: bool, types: tuple[str, ...]) -> bool:
    if pattern == "ANY":
        return len(types) == 1
    if pattern == "VAR":
        return len(types) >= 2 and all(t == "S" or (queries and t == "Q") for t in types)
    if len(pattern) != len(types):
        return False
    for wanted, given in zip(pattern, types, strict=True):
        if wanted == given:
            continue
        if queries and ((given == "Q" and wanted in _SUPPORTED) or (wanted == "Q" and given in _SUPPORTED)):
            continue
        return False
    return True


def _signature(pattern: tuple[str, ...] | str) -> str:
    if pattern == "ANY":
        return "one argument"
    if pattern == "VAR":
        return "two or more strings"
    return "(" + ", ".join(_NAMES[t] for t in pattern) + ")"


def _shown(node: Expr) -> str:
    if isinstance(node, Property | SystemProperty):
        return node.name
    return "the property"


def body_path(path: str) -> tuple[str | int, ...] | str | None:
    """The steps of a ``$body.`` path; a message if edgeHub refuses it; None if it can never select.

    edgeHub validates the path with its JsonPath grammar (names joined by '.', each with at
    most one ``[n]``; a valid prefix is enough) and then runs Json.NET's SelectTokens on it.
    """
    if not path:
        return "the query is empty"
    position, size = 0, len(path)
    first = True
    while position < size:
        if not first:
            if path[position] != ".":
                break  # edgeHub's validator stops at a valid prefix
            position += 1
        start = position
        while position < size and path[position] not in _PATH_STOP:
            position += 1
        if position == start:
            found = path[position] if position < size else "the end"
            return f"expected a name at {found!r}"
        if position < size and path[position] == "[":
            close = path.find("]", position)
            digits = path[position + 1 : close] if close > 0 else ""
            if close < 0 or not digits.isdigit():
                return "an index must be [digits]"
            position = close + 1
        first = False
    return _select_steps(path)


_PATH_STOP: Final = frozenset('()<>@,;:\\"/[]?={}.\t\n\r ')


def _select_steps(path: str) -> tuple[str | int, ...] | None:
    """Json.NET's reading of the simple paths: names and ``[n]`` indexes (else None)."""
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if not name or name == "*":
            return None
        steps.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.isdigit() or int(index) >= 2**31 or (rest and not rest.startswith("[")):
                return None
            steps.append(int(index))
            rest = rest[1:]
    return tuple(steps)


def compile_function(
    name: str, body: str, constants: dict[str, object], *, fallback: str, guard: bool = True
) -> Callable[[object], object]:
    """Build ``name(m)`` returning ``body``; ``fallback`` when anything raises (it should not).

    ``guard=False`` leaves out that last-resort ``try``, for tests that prove nothing raises.
    """
    lines = [f"def {name}(m):"]
    reads = (("P", "properties"), ("S", "system"))
    lines += [f"    {var} = m.{attr}" for var, attr in reads if re.search(rf"\b{var}\b", body)]
    lines.append(f"    return {body}")
    if guard:
        lines = [lines[0], "    try:", *(f"    {line}" for line in lines[1:])]
        lines += ["    except Exception:", f"        return {fallback}"]
    source = "\n".join(lines)
    namespace = dict(NAMESPACE)
    namespace.update(constants)
    exec(compile(source, "<outpost condition>", "exec"), namespace)
    function = namespace[name]
    function.__doc__ = source
    return function  # type: ignore[return-value]
