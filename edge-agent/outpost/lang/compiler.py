"""Compile a target-condition tree once into a Python function.

Target conditions run against many twins, so the tree is turned into Python
source and compiled with ``compile()``: one flat function per condition, with no tree walk
and no per-node call at evaluation time (see docs/languages.md, Performance). Comparisons
with a literal (the common case) are inlined; everything else calls the total helpers in
``runtime.py``, so the generated code cannot raise on bad operands. The body is still
wrapped in ``try`` as a last guard: a condition that fails is a condition that is false.

Generated code only ever refers to values by name (``K0``, ``K1``...); literal values are
never spliced into the source, so no input text can inject code.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Final, cast

from outpost.lang import runtime
from outpost.lang.nodes import Binary, Call, Literal, Logical, Membership, Node, Ref, Unary
from outpost.lang.values import UNDEFINED

__all__ = ["Evaluator", "compile_node"]

Evaluator = Callable[[object], bool]

_PY_OP: Final = {"=": "==", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_MIRROR: Final = {"=": "=", "!=": "!=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITH_HELPER: Final = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod"}
_ARITH_FOLD: Final = runtime.ARITHMETIC

_BASE_NAMESPACE: Final[dict[str, object]] = {
    "__builtins__": {},
    "type": type,
    "str": str,
    "dict": dict,
    "bool": bool,
    "Exception": Exception,
    "U": UNDEFINED,
    "NUM": runtime.NUM,
    "ci_get": runtime.ci_get,
    "walk": runtime.walk,
    "compare": runtime.compare,
    "member": runtime.member,
    "add": runtime.add,
    "sub": runtime.sub,
    "mul": runtime.mul,
    "div": runtime.div,
    "mod": runtime.mod,
    "neg": runtime.neg,
}


def compile_node(node: Node, *, guard: bool = True) -> Evaluator:
    """Compile ``node`` into ``f(twin) -> bool`` (true only when the node evaluates to exactly true).

    ``guard=False`` drops the last-resort ``try`` so tests can prove the helpers alone never raise.
    """
    emitter = _Emitter()
    expression = emitter.expr(node)
    body = f"return ({expression}) is True"
    if guard:
        lines = ["def evaluate(m):", "    try:", f"        {body}", "    except Exception:", "        return False"]
    else:
        lines = ["def evaluate(m):", f"    {body}"]
    namespace = dict(_BASE_NAMESPACE)
    namespace.update(emitter.constants)
    source = "\n".join(lines)
    exec(compile(source, "<outpost condition>", "exec"), namespace)
    function = namespace["evaluate"]
    if not isinstance(function, types.FunctionType):  # pragma: no cover - the source defines it
        raise TypeError("generated code did not define evaluate()")
    function.__doc__ = source  # the generated source, for debugging
    return cast(Evaluator, function)


class _Emitter:
    """Turns nodes into one Python expression; ``:=`` temporaries keep evaluation single-pass."""

    def __init__(self) -> None:
        self.constants: dict[str, object] = {}
        self._by_identity: dict[tuple[type, object], str] = {}
        self._temps = 0

    def const(self, value: object) -> str:
        if value is UNDEFINED:
            return "U"
        if value is None or type(value) is bool:
            return repr(value)
        try:
            key: tuple[type, object] = (type(value), value)
            hash(key)
        except TypeError:
            key = (type(value), id(value))
        name = self._by_identity.get(key)
        if name is None:
            name = f"K{len(self.constants)}"
            self.constants[name] = value
            self._by_identity[key] = name
        return name

    def temp(self) -> str:
        self._temps += 1
        return f"t{self._temps}"

    def expr(self, node: Node) -> str:
        if isinstance(node, Literal):
            return self.const(node.value)
        if isinstance(node, Ref):
            return self.ref(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.compare(node) if node.op in _PY_OP else self.arith(node)
        if isinstance(node, Logical):
            return self.logical(node)
        if isinstance(node, Call):
            return self.call(node)
        return self.membership(node)

    # reads ----------------------------------------------------------------------------

    def _lookup(self, mapping: str, key: object, fallback: str) -> str:
        v, k = self.temp(), self.const(key)
        return f"({v} if ({v} := {mapping}.get({k}, U)) is not U else {fallback})"

    def ref(self, node: Ref) -> str:
        steps = (node.name, *node.steps)
        if len(steps) == 1 and isinstance(steps[0], str):
            b = self.temp()
            lookup = self._lookup(b, steps[0], f"ci_get({b}, {self.const(steps[0])})")
            return f"({lookup} if type({b} := m) is dict else U)"
        return f"walk(m, {self.const(tuple(steps))})"

    # operators ------------------------------------------------------------------------

    def unary(self, node: Unary) -> str:
        if node.op == "NOT":
            t = self.temp()
            return f"((not {t}) if type({t} := {self.expr(node.operand)}) is bool else U)"
        operand = self.expr(node.operand)
        if node.op == "-":
            return f"neg({operand})"
        t = self.temp()
        return f"({t} if type({t} := {operand}) in NUM else U)"

    def arith(self, node: Binary) -> str:
        if isinstance(node.left, Literal) and isinstance(node.right, Literal):
            return self.const(_ARITH_FOLD[node.op](node.left.value, node.right.value))
        left = self.expr(node.left)
        right = self.expr(node.right)
        return f"{_ARITH_HELPER[node.op]}({left}, {right})"

    def compare(self, node: Binary) -> str:
        op, left, right = node.op, node.left, node.right
        if isinstance(left, Literal) and isinstance(right, Literal):
            return self.const(runtime.compare(op, left.value, right.value))
        if isinstance(left, Literal):
            op, left, right = _MIRROR[op], right, left
        if isinstance(right, Literal):
            return self.compare_literal(op, left, right.value)
        return f"compare({op!r}, {self.expr(left)}, {self.expr(right)})"

    def compare_literal(self, op: str, node: Node, literal: object) -> str:
        t, py = self.temp(), _PY_OP[op]
        kind = type(literal)
        if kind in (int, float):
            return f"(({t} {py} {self.const(literal)}) if type({t} := {self.expr(node)}) in NUM else U)"
        if kind is str:
            return f"(({t} {py} {self.const(literal)}) if type({t} := {self.expr(node)}) is str else U)"
        if kind is bool and op in ("=", "!=", "<>"):
            return f"(({t} {py} {literal!r}) if type({t} := {self.expr(node)}) is bool else U)"
        if literal is None and op in ("=", "!=", "<>"):
            return f"({op == '='} if {self.expr(node)} is None else U)"
        return "U"  # ordering Booleans or null, or comparing with undefined

    def logical(self, node: Logical) -> str:
        # Three-valued: AND is false if any operand is false, true if all are true,
        # otherwise undefined (OR symmetrically); evaluation stops at the deciding operand.
        decisive, other = ("False", "True") if node.op == "AND" else ("True", "False")
        temps = [self.temp() for _ in node.operands]
        parts = [
            f"{decisive} if ({t} := {self.expr(operand)}) is {decisive} else"
            for t, operand in zip(temps, node.operands, strict=True)
        ]
        every = " and ".join(f"{t} is {other}" for t in temps)
        return f"({' '.join(parts)} {other} if {every} else U)"

    def call(self, node: Call) -> str:
        function = node.function
        name = self.const(function.impl)
        args = ", ".join(self.expr(arg) for arg in node.args)
        return f"{name}({args})"

    def membership(self, node: Membership) -> str:
        operand = self.expr(node.operand)
        if all(isinstance(item, Literal) for item in node.items):
            items = self.const(tuple(item.value for item in node.items))  # type: ignore[union-attr]
        else:
            items = "(" + "".join(f"{self.expr(item)}, " for item in node.items) + ")"
        test = f"member({operand}, {items})"
        if not node.negated:
            return test
        t = self.temp()
        return f"((not {t}) if type({t} := {test}) is bool else U)"
