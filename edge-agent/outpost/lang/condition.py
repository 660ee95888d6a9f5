"""Route conditions: edgeHub's routing query language, typed and compiled once per route.

Names resolve as edgeHub resolves them: a bare name is an application property; ``$name``
is the application property ``$name`` if the message has one, else the system property
``name``; ``$body.a.b[0]`` is a path into a JSON body (an application property of that
exact name wins); ``{$name}`` skips the application properties. Property and system
property names are case-insensitive, body paths are not. Static types and compile
errors follow edgeHub (``emitter.py``); so do the answers (``semantics.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from outpost.errors import QueryError
from outpost.lang.emitter import Note, compile_function, emit, to_bool
from outpost.lang.syntax import ConditionSyntax, parse_condition
from outpost.lang.values import UNDEFINED

__all__ = ["Condition", "compile_condition", "compile_parsed", "expression_value"]

Evaluator = Callable[[object], bool]


class Condition:
    """A compiled route condition: call it with a RoutingMessage; true only if it evaluates to true."""

    __slots__ = ("evaluate", "notes", "text", "value")

    def __init__(
        self, text: str, evaluate: Evaluator, value: Callable[[object], object], notes: tuple[Note, ...] = ()
    ) -> None:
        self.text = text
        self.evaluate = evaluate
        """The raw compiled function, for hot loops that want to skip one call."""
        self.value = value
        """The three-valued answer: True, False or UNDEFINED (what edgeHub's Bool holds)."""
        self.notes = notes
        """What to tell the user: Outpost extensions used (``deviation`` set) and edgeHub quirks met."""

    @property
    def deviations(self) -> tuple[Note, ...]:
        """The notes that name an Outpost extension edgeHub would refuse."""
        return tuple(note for note in self.notes if note.deviation is not None)

    def __call__(self, message: object) -> bool:
        return self.evaluate(message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Condition", self.text))

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def compile_condition(text: str, *, guard: bool = True) -> Condition:
    """Parse, type and compile a route condition (the part after WHERE); raise QueryError if edgeHub would.

    ``guard=False`` drops the last-resort ``try`` so tests can prove the helpers alone never raise.
    """
    syntax = parse_condition(text)
    return compile_parsed(text, syntax, text, guard=guard)


def compile_parsed(source: str, syntax: ConditionSyntax, text: str, *, guard: bool = True) -> Condition:
    """Compile a parsed condition; errors point into ``source`` (the condition or the whole route)."""
    notes: list[Note] = []
    if syntax.ignored is not None:
        notes.append(Note(f"text from column {syntax.ignored.start + 1} on is ignored (edgeHub ignores it too)"))
    if syntax.lists:
        notes.append(Note("write x = a OR x = b instead of x IN [a, b]", "in-list"))
    if syntax.expr is None:  # an empty condition is undefined
        return Condition(text, lambda _m: False, lambda _m: UNDEFINED, tuple(notes))
    try:
        root, constants, found = emit(source, syntax.expr)
    except RecursionError as exc:  # a very long chain of mixed operands: report, never leak
        raise QueryError("condition is too complex to compile (RecursionError)", text=source) from exc
    notes.extend(note for note in found if note not in notes)
    code = to_bool(root)
    try:
        value = compile_function("value", code, constants, fallback="U", guard=guard)
        evaluate = compile_function("evaluate", f"({code}) is True", constants, fallback="False", guard=guard)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:  # compile() limits: report, never leak
        raise QueryError(f"condition is too complex to compile ({type(exc).__name__})", text=source) from exc
    return Condition(text, evaluate, value, tuple(notes))  # type: ignore[arg-type]


def expression_value(text: str, message: object) -> object:
    """The value of an expression (not converted to a Boolean), for tests against edgeHub's own."""
    syntax = parse_condition(text)
    if syntax.expr is None:
        return UNDEFINED
    root, constants, _ = emit(text, syntax.expr)
    return compile_function("expression", root.code, constants, fallback="U")(message)
