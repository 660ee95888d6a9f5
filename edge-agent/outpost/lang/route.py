"""Routes: ``FROM <source> [WHERE <condition>] INTO <sink>``, as in Azure IoT Edge's edgeHub.

The source and sink are single tokens to the grammar and are checked here, so a typo such
as ``/messages/module/x/*`` gets a sentence naming the accepted shapes instead of a bare
syntax error. The WHERE clause is compiled from the same parse, so its errors carry their
position in the whole route text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from lark import Token, Tree

from outpost.errors import QueryError
from outpost.lang.condition import Condition, condition_from_tree
from outpost.lang.message import RoutingMessage
from outpost.lang.parser import error_at, parse

__all__ = ["ModuleInputSink", "Route", "Sink", "Source", "SourceKind", "UpstreamSink", "parse_route"]

_ID: Final = r"[a-zA-Z0-9_.-]+"
_MODULE_SOURCE: Final = re.compile(rf"/(?i:messages/modules)/({_ID})/(?:(\*)|(?i:outputs)/(?:(\*)|({_ID})))")
_INPUT_PATH: Final = re.compile(rf"/(?i:modules)/({_ID})/(?i:inputs)/({_ID})")
_SOURCE_FORMS: Final = (
    "/*, /twinChangeNotifications, /messages/*, /messages/modules/*, /messages/modules/{id}/*, "
    "/messages/modules/{id}/outputs/* or /messages/modules/{id}/outputs/{output}"
)


class SourceKind(enum.Enum):
    """The seven source forms edgeHub accepts."""

    ALL = "/*"
    TWIN_CHANGES = "/twinChangeNotifications"
    MESSAGES = "/messages/*"
    ALL_MODULES = "/messages/modules/*"
    MODULE = "/messages/modules/{id}/*"
    MODULE_OUTPUTS = "/messages/modules/{id}/outputs/*"
    MODULE_OUTPUT = "/messages/modules/{id}/outputs/{output}"


_FIXED_SOURCES: Final = {
    "/*": SourceKind.ALL,
    "/twinchangenotifications": SourceKind.TWIN_CHANGES,
    "/messages/*": SourceKind.MESSAGES,
    "/messages/modules/*": SourceKind.ALL_MODULES,
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a route takes messages from; ``module``/``output`` are set for the module forms."""

    kind: SourceKind
    module: str | None = None
    output: str | None = None

    def matches(self, *, module_id: str | None, output: str | None, is_message: bool = True) -> bool:
        """Whether a message from ``module_id``'s ``output`` (None, None: a leaf device) is selected.

        ``is_message=False`` asks about a twin change notification instead of a message.
        """
        kind = self.kind
        if kind is SourceKind.ALL:
            return True
        if not is_message:
            return kind is SourceKind.TWIN_CHANGES
        if kind is SourceKind.MESSAGES:
            return True
        if kind is SourceKind.TWIN_CHANGES or module_id is None:
            return False
        if kind is SourceKind.ALL_MODULES:
            return True
        if module_id != self.module:
            return False
        if kind is SourceKind.MODULE:
            return True
        if kind is SourceKind.MODULE_OUTPUTS:
            return output is not None
        return output == self.output

    def __str__(self) -> str:
        return self.kind.value.replace("{id}", self.module or "").replace("{output}", self.output or "")


@dataclass(frozen=True, slots=True)
class UpstreamSink:
    """``$upstream``: the cloud (or Outpost's hub)."""

    def __str__(self) -> str:
        return "$upstream"


@dataclass(frozen=True, slots=True)
class ModuleInputSink:
    """``BrokeredEndpoint("/modules/{module}/inputs/{input}")``."""

    module: str
    input: str

    def __str__(self) -> str:
        return f'BrokeredEndpoint("/modules/{self.module}/inputs/{self.input}")'


Sink = UpstreamSink | ModuleInputSink


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed route; ``condition`` is None when there is no WHERE clause."""

    text: str
    source: Source
    condition: Condition | None
    sink: Sink

    def matches(
        self, message: RoutingMessage, *, module_id: str | None, output: str | None, is_message: bool = True
    ) -> bool:
        """Whether this route takes ``message`` (source first: it is the cheaper test)."""
        if not self.source.matches(module_id=module_id, output=output, is_message=is_message):
            return False
        return self.condition is None or self.condition.evaluate(message)


def parse_route(text: str) -> Route:
    """Parse a route; raise QueryError with the line and column of the first problem."""
    tree = parse(text, "start_route")
    tokens = {child.type: child for child in tree.children if isinstance(child, Token)}
    clauses = [child for child in tree.children if isinstance(child, Tree)]
    condition = None
    if len(clauses) == 2:  # WHERE <expr> and the sink
        where, into = tokens["WHERE"], tokens["INTO"]
        clause = text[where.end_pos : into.start_pos].strip()
        condition = condition_from_tree(text, clauses[0], clause)
    return Route(text, _source(text, tokens["SOURCE"]), condition, _sink(text, clauses[-1]))


def _source(text: str, token: Token) -> Source:
    path = str(token.value)
    kind = _FIXED_SOURCES.get(path.lower())
    if kind is not None:
        return Source(kind)
    match = _MODULE_SOURCE.fullmatch(path)
    if match is None:
        raise error_at(text, token.start_pos or 0, f"unknown source {path!r}; expected {_SOURCE_FORMS}")
    module, any_output, every_output, output = match.groups()
    if any_output:
        return Source(SourceKind.MODULE, module)
    if every_output:
        return Source(SourceKind.MODULE_OUTPUTS, module)
    return Source(SourceKind.MODULE_OUTPUT, module, output)


def _sink(text: str, tree: Tree[Token]) -> Sink:
    name, *rest = (child for child in tree.children if isinstance(child, Token))
    offset = name.start_pos or 0
    if tree.data == "system_sink":
        if str(name.value).lower() == "$upstream":
            return UpstreamSink()
        raise _bad_sink(text, offset, f"unknown sink {name.value!r}")
    if str(name.value).lower() != "brokeredendpoint":
        raise _bad_sink(text, offset, f"unknown sink function {name.value!r}")
    literal = rest[0]
    raw = str(literal.value)
    path = raw[1:-1]
    match = _INPUT_PATH.fullmatch(path)
    if match is None:
        raise error_at(
            text,
            (literal.start_pos or 0) + 1,
            f"BrokeredEndpoint path {path!r} must be /modules/{{module}}/inputs/{{input}} "
            "with module and input made of letters, digits, '_', '.' and '-'",
        )
    return ModuleInputSink(match.group(1), match.group(2))


def _bad_sink(text: str, offset: int, message: str) -> QueryError:
    expected = 'expected $upstream or BrokeredEndpoint("/modules/{id}/inputs/{input}")'
    return error_at(text, offset, f"{message}; {expected}")
