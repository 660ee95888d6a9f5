"""Route conditions: IoT Hub's message routing query language, compiled once per route.

Names resolve as IoT Hub documents them: a bare name is an application property, a
``$name`` a system property (falling back to an application property spelled ``$name``),
and ``$body.a.b[0]`` a path into the JSON body. ``$twin`` is refused: twin queries are not
available on the edge.
"""

from __future__ import annotations

from typing import Final

from lark import Token, Tree

from outpost.errors import QueryError
from outpost.lang.compiler import Evaluator, compile_node
from outpost.lang.message import RoutingMessage
from outpost.lang.nodes import Literal, Node, Ref, RefKind, Step, build
from outpost.lang.parser import error_at, parse
from outpost.lang.runtime import ci_get
from outpost.lang.values import UNDEFINED

__all__ = ["SYSTEM_PROPERTIES", "Condition", "compile_condition", "condition_from_tree"]

SYSTEM_PROPERTIES: Final = (
    "connectionDeviceId",
    "connectionModuleId",
    "connectionAuthMethod",
    "connectionDeviceGenerationId",
    "contentType",
    "contentEncoding",
    "messageId",
    "correlationId",
    "userId",
    "to",
    "ack",
    "enqueuedTime",
    "creationTimeUtc",
    "outputName",
    "inputName",
    "messageSource",
    "dt-dataschema",
    "dt-subject",
)
"""System property names with their canonical spelling (``$ContentType`` reads ``contentType``)."""

_CANONICAL: Final = {name.lower(): name for name in SYSTEM_PROPERTIES} | {
    "iothub-connection-device-id": "connectionDeviceId",
    "iothub-connection-module-id": "connectionModuleId",
    "iothub-connection-auth-method": "connectionAuthMethod",
    "iothub-connection-auth-generation-id": "connectionDeviceGenerationId",
    "iothub-enqueuedtime": "enqueuedTime",
    "iothub-creation-time-utc": "creationTimeUtc",
    "iothub-message-source": "messageSource",
}


class Condition:
    """A compiled route condition: call it with a RoutingMessage; true only if it evaluates to true."""

    __slots__ = ("deviations", "evaluate", "text")

    def __init__(self, text: str, evaluate: Evaluator, deviations: tuple[str, ...] = ()) -> None:
        self.text = text
        self.evaluate = evaluate
        """The raw compiled function, for hot loops that want to skip one call."""
        self.deviations = deviations
        """Where this condition relies on Outpost reading it differently from edgeHub (docs/languages.md)."""

    def __call__(self, message: RoutingMessage) -> bool:
        return self.evaluate(message)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Condition", self.text))

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def compile_condition(text: str) -> Condition:
    """Parse and compile a route condition (the part after WHERE); raise QueryError if invalid."""
    tree = parse(text, "start_condition")
    return condition_from_tree(text, tree.children[0], text)


def condition_from_tree(source: str, tree: Tree[Token] | Token, text: str, *, guard: bool = True) -> Condition:
    """Compile an already parsed condition; errors point into ``source`` (e.g. the whole route)."""
    node = build(source, tree, _resolve)
    try:
        evaluate = compile_node(node, system_lookup=_system_fallback, guard=guard)
    except Exception as exc:  # compile() limits: report, never leak SyntaxError/RecursionError
        raise QueryError(f"condition is too complex to compile ({type(exc).__name__})", text=source) from exc
    return Condition(text, evaluate)


def _resolve(text: str, name: Token, steps: tuple[Step, ...]) -> Node:
    raw = str(name.value)
    lowered = raw.lower()
    offset = name.start_pos or 0
    if lowered == "$body":
        if not steps or isinstance(steps[0], int):
            return Literal(UNDEFINED)  # IoT Hub: queries on the whole body (or $body[0]) are undefined
        return Ref(RefKind.BODY, raw, steps)
    if lowered == "$twin":
        raise error_at(text, offset, "$twin is not supported on the edge; use message properties or $body")
    if raw.startswith("$"):
        if steps:
            raise error_at(text, offset, f"system property {raw} has no fields; only $body takes a path")
        return Ref(RefKind.SYSTEM, _CANONICAL.get(lowered[1:], raw[1:]))
    for step in steps:
        if isinstance(step, int):
            raise error_at(text, offset, f"application property {raw!r} is a string; it cannot be indexed")
    # Azure's lexer allows dots inside property names: "a.b" is one application property.
    return Ref(RefKind.PROPERTY, ".".join([raw, *map(str, steps)]))


def _system_fallback(message: object, name: str) -> object:
    """Slow path of ``$name``: system property in any case, then application property ``$name``."""
    if not isinstance(message, RoutingMessage):
        return UNDEFINED
    found = ci_get(message.system, name)
    if found is not UNDEFINED:
        return found
    key = "$" + name
    found = message.properties.get(key, UNDEFINED)
    return ci_get(message.properties, key) if found is UNDEFINED else found
