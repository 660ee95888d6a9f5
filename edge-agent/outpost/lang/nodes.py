"""The expression tree of target conditions.

``build`` turns lark's parse tree into these nodes and does every compile-time check
(literals, escapes, function names and arity, nesting depth). The meaning of a *name* is
delegated to a ``Resolver`` (target conditions read a twin). Route conditions follow
edgeHub's grammar and have their own nodes (``syntax.py``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from lark import Token, Tree

from outpost.errors import QueryError
from outpost.lang.functions import FUNCTIONS, Function
from outpost.lang.parser import error_at
from outpost.lang.values import UNDEFINED

__all__ = [
    "MAX_DEPTH",
    "Binary",
    "Call",
    "Literal",
    "Logical",
    "Membership",
    "Node",
    "Ref",
    "RefKind",
    "Resolver",
    "Step",
    "Unary",
    "build",
    "steps_text",
]

MAX_DEPTH: Final = 40
"""Deepest nesting accepted; generated Python must stay within the interpreter's limits."""

Step = str | int


class RefKind(enum.Enum):
    """Where a name reads from (route conditions have their own nodes, in ``syntax.py``)."""

    TWIN = "twin"  # deviceId, tags.x, properties.reported.y (JSON)


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant (JSON value or UNDEFINED)."""

    value: object


@dataclass(frozen=True, slots=True)
class Ref:
    """A read of a property, body path or twin path."""

    kind: RefKind
    name: str
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Unary:
    """``-x``, ``+x`` or ``NOT x``."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic (``+ - * / %``) or comparison (``= != <> < <= > >=``)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Logical:
    """``AND``/``OR`` over two or more operands (chains are flattened)."""

    op: str
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A built-in function call, checked for name and arity."""

    function: Function
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Membership:
    """``x IN [...]`` or, negated, ``x NIN [...]`` / ``x NOT IN [...]``."""

    operand: Node
    items: tuple[Node, ...]
    negated: bool


Node = Literal | Ref | Unary | Binary | Logical | Call | Membership

Resolver = Callable[[str, Token, tuple[Step, ...]], Node]
"""Maps (text, name token, steps) to a node, raising QueryError for names it refuses."""

_ESCAPE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|['\"\\])|\\")
_ARITHMETIC: Final = frozenset({"+", "-", "*", "/", "%"})


def steps_text(name: str, steps: tuple[Step, ...]) -> str:
    """The path written back as text: ``a.b[0].c``."""
    return name + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)


def build(
    text: str, tree: Tree[Token] | Token, resolve: Resolver, functions: Mapping[str, Function] = FUNCTIONS
) -> Node:
    """Convert a parse tree into nodes; raise QueryError (with position) for semantic errors."""
    return _Builder(text, resolve, functions).node(tree, 0)


class _Builder:
    def __init__(self, text: str, resolve: Resolver, functions: Mapping[str, Function]) -> None:
        self.text = text
        self.resolve = resolve
        self.functions = functions

    def fail(self, token: Token | None, message: str) -> QueryError:
        offset = token.start_pos if token is not None and token.start_pos is not None else 0
        return error_at(self.text, offset, message)

    def node(self, tree: Tree[Token] | Token, depth: int) -> Node:
        if isinstance(tree, Token):  # pragma: no cover - the grammar wraps every token
            raise self.fail(tree, f"unexpected {tree.value!r}")
        if depth > MAX_DEPTH:
            raise self.fail(_first_token(tree), f"expression nests more than {MAX_DEPTH} levels deep")
        method = getattr(self, f"_{tree.data}", None)
        if method is None:  # pragma: no cover - every rule of the grammar has a method
            raise self.fail(_first_token(tree), f"unsupported construct {tree.data}")
        result: Node = method(tree, depth + 1)
        return result

    def _children(self, tree: Tree[Token], depth: int) -> list[Node]:
        return [self.node(child, depth) for child in tree.children if isinstance(child, Tree)]

    # literals -------------------------------------------------------------------------

    def _number(self, tree: Tree[Token], _depth: int) -> Node:
        token = _token(tree)
        raw = str(token.value)
        try:
            if raw[:2] in ("0x", "0X"):
                return Literal(int(raw, 16))
            if "." in raw or "e" in raw or "E" in raw:
                value = float(raw)
                if not math.isfinite(value):
                    raise self.fail(token, f"number {raw} is out of range")
                return Literal(value)
            return Literal(int(raw))
        except ValueError as exc:
            raise self.fail(token, f"number {raw[:20]}... has too many digits") from exc

    def _string(self, tree: Tree[Token], _depth: int) -> Node:
        token = _token(tree)
        raw = str(token.value)
        start = token.start_pos or 0

        def unescape(match: re.Match[str]) -> str:
            code = match.group(1)
            if code is None:
                bad = body[match.start() : match.start() + 2]
                raise error_at(
                    self.text,
                    start + 1 + match.start(),
                    f"invalid escape {bad!r} in string; allowed: \\' \\\" \\\\ \\uXXXX",
                )
            return chr(int(code[1:], 16)) if code[0] == "u" else code

        body = raw[1:-1]
        return Literal(_ESCAPE.sub(unescape, body))

    def _true(self, _tree: Tree[Token], _depth: int) -> Node:
        return Literal(True)

    def _false(self, _tree: Tree[Token], _depth: int) -> Node:
        return Literal(False)

    def _null(self, _tree: Tree[Token], _depth: int) -> Node:
        return Literal(None)

    def _undefined(self, _tree: Tree[Token], _depth: int) -> Node:
        return Literal(UNDEFINED)

    # names and calls ------------------------------------------------------------------

    def _path(self, tree: Tree[Token], _depth: int) -> Node:
        name, *rest = (child for child in tree.children if isinstance(child, Token))
        steps: list[Step] = []
        for token in rest:
            value = str(token.value)
            steps.append(value[1:] if token.type == "SEGMENT" else int(value.strip("[] \t")))
        return self.resolve(self.text, name, tuple(steps))

    def _call(self, tree: Tree[Token], depth: int) -> Node:
        name = _token(tree)
        upper = str(name.value).upper()
        function = self.functions.get(upper)
        if function is None:
            known = ", ".join(sorted(self.functions))
            raise self.fail(name, f"unknown function {name.value!r}; known: {known}")
        args = tuple(self._children(tree, depth))
        if len(args) < function.min_args or (function.max_args is not None and len(args) > function.max_args):
            raise self.fail(name, f"{upper} takes {function.arity_text()}, got {len(args)}")
        return Call(function, args)

    # operators ------------------------------------------------------------------------

    def _neg(self, tree: Tree[Token], depth: int) -> Node:
        (operand,) = self._children(tree, depth)
        if isinstance(operand, Literal) and type(operand.value) in (int, float):
            return Literal(-operand.value)  # type: ignore[operator]
        return Unary("-", operand)

    def _pos(self, tree: Tree[Token], depth: int) -> Node:
        (operand,) = self._children(tree, depth)
        return Unary("+", operand)

    def _not_(self, tree: Tree[Token], depth: int) -> Node:
        (operand,) = self._children(tree, depth)
        return Unary("NOT", operand)

    def _arith(self, tree: Tree[Token], depth: int) -> Node:
        left, right = self._children(tree, depth)
        return Binary(str(_token(tree).value), left, right)

    def _compare(self, tree: Tree[Token], depth: int) -> Node:
        left, right = self._children(tree, depth)
        return Binary(str(_token(tree).value), left, right)

    def _logical(self, op: str, tree: Tree[Token], depth: int) -> Node:
        # Chains are flattened so "a OR b OR ... OR z" does not count as deep nesting.
        operands: list[Node] = []
        pending: list[Tree[Token] | Token] = [tree]
        while pending:
            current = pending.pop()
            if isinstance(current, Tree) and current.data == tree.data:
                pending.extend(reversed([c for c in current.children if isinstance(c, Tree)]))
            else:
                operands.append(self.node(current, depth))
        return Logical(op, tuple(operands))

    def _and_(self, tree: Tree[Token], depth: int) -> Node:
        return self._logical("AND", tree, depth)

    def _or_(self, tree: Tree[Token], depth: int) -> Node:
        return self._logical("OR", tree, depth)

    def _in_(self, tree: Tree[Token], depth: int) -> Node:
        return self._membership(tree, depth, negated=False)

    def _nin(self, tree: Tree[Token], depth: int) -> Node:
        return self._membership(tree, depth, negated=True)

    def _membership(self, tree: Tree[Token], depth: int, *, negated: bool) -> Node:
        operand_tree, list_tree = (c for c in tree.children if isinstance(c, Tree))
        items = tuple(self._children(list_tree, depth + 1))
        return Membership(self.node(operand_tree, depth), items, negated)


def _token(tree: Tree[Token]) -> Token:
    for child in tree.children:
        if isinstance(child, Token):
            return child
    raise AssertionError("rule without a token")  # pragma: no cover


def _first_token(tree: Tree[Token]) -> Token | None:
    for token in tree.scan_values(lambda v: isinstance(v, Token)):
        return token
    return None
