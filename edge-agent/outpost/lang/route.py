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

_ID: Final = r"[^/]+"
_MODULE_SOURCE: Final = re.compile(rf"/(?i:messages/modules)/({_ID})/(?:((?i:outputs))/(?:({_ID})/)?)?")


class SourceKind(enum.Enum):
    """The source forms, by the messages they select (see ``Source``)."""

    ALL = "/*"
    TWIN_CHANGES = "/twinChangeNotifications"
    MESSAGES = "/messages/*"
    ALL_MODULES = "/messages/modules/*"
    MODULE = "/messages/modules/{id}/*"
    MODULE_OUTPUTS = "/messages/modules/{id}/outputs/*"
    MODULE_OUTPUT = "/messages/modules/{id}/outputs/{output}"
    NOTHING = "{path}"
    """A path no message source starts with (edgeHub accepts it too; it selects nothing)."""


_FIXED_SOURCES: Final = {
    "/": SourceKind.ALL,
    "/twinchangenotifications/": SourceKind.TWIN_CHANGES,
    "/messages/": SourceKind.MESSAGES,
    "/messages/modules/": SourceKind.ALL_MODULES,
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a route takes messages from; ``module``/``output`` are set for the module forms.

    edgeHub matches a source as a case-insensitive prefix of the message's source path
    (``/messages/modules/{id}/outputs/{output}/``, ``/messages/`` for a leaf device,
    ``/twinChangeNotifications/``) after dropping a trailing ``*`` and adding one ``/``:
    ``FROM /messages/modules/x`` is ``FROM /messages/modules/x/*``. The kinds are those
    prefixes, so matching needs no string building.
    """

    kind: SourceKind
    module: str | None = None
    output: str | None = None
    path: str | None = None

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
        if kind is SourceKind.TWIN_CHANGES or kind is SourceKind.NOTHING or module_id is None:
            return False
        if kind is SourceKind.ALL_MODULES:
            return True
        if module_id != self.module and module_id.lower() != (self.module or "").lower():
            return False
        if kind is SourceKind.MODULE:
            return True
        if kind is SourceKind.MODULE_OUTPUTS:
            return output is not None
        return output is not None and (output == self.output or output.lower() == (self.output or "").lower())

    def __str__(self) -> str:
        if self.kind is SourceKind.NOTHING:
            return self.path or ""
        return str(self.kind.value).replace("{id}", self.module or "").replace("{output}", self.output or "")


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
        address = f"/modules/{self.module}/inputs/{self.input}"
        return f"BrokeredEndpoint('{address}')" if '"' in address else f'BrokeredEndpoint("{address}")'


Sink = UpstreamSink | ModuleInputSink


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed route; ``condition`` is None when there is no WHERE clause.

    ``deviations`` name what Outpost reads differently from edgeHub, or what edgeHub
    accepts but is likely a mistake (``outpost manifest validate`` shows them as warnings).
    """

    text: str
    source: Source
    condition: Condition | None
    sink: Sink
    deviations: tuple[str, ...] = ()

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
    notes: list[str] = []
    if len(clauses) == 2:  # WHERE <expr> and the sink
        where, into = tokens["WHERE"], tokens["INTO"]
        clause = text[where.end_pos : into.start_pos].strip()
        condition = condition_from_tree(text, clauses[0], clause)
        notes.extend(condition.deviations)
    source = _source(tokens["SOURCE"], notes)
    sink = _sink(text, clauses[-1], notes)
    return Route(text, source, condition, sink, tuple(notes))


def _source(token: Token, notes: list[str]) -> Source:
    path = str(token.value)
    # edgeHub (CustomMessageSource, BaseMessageSource): drop trailing '*', then '/', add one '/'.
    trimmed = path.strip().rstrip("*")
    prefix = (trimmed.rstrip("/") if len(trimmed) > 1 else trimmed).rstrip("/") + "/"
    kind = _FIXED_SOURCES.get(prefix.lower())
    if kind is not None:
        return Source(kind)
    match = _MODULE_SOURCE.fullmatch(prefix)
    if match is None:
        notes.append(
            f"source {path!r} selects no message (sources are prefixes of /messages/modules/{{id}}/outputs/{{output}},"
            " /messages or /twinChangeNotifications); edgeHub accepts it too"
        )
        return Source(SourceKind.NOTHING, path=path)
    module, outputs, output = match.groups()
    if "*" in module or (output is not None and "*" in output):
        notes.append(f"'*' in source {path!r} is a literal character, not a wildcard (only a trailing '*' is)")
    if output is not None:
        return Source(SourceKind.MODULE_OUTPUT, module, output)
    if outputs is not None:
        return Source(SourceKind.MODULE_OUTPUTS, module)
    return Source(SourceKind.MODULE, module)


def _sink(text: str, tree: Tree[Token], notes: list[str]) -> Sink:
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
    # edgeHub (EndpointFactory): the literal's text as written (no unescaping), trimmed, one
    # leading and one trailing '/' dropped, split on '/' into exactly four parts; the 2nd is
    # the module, the 4th the input, the 1st and 3rd are not looked at.
    address = raw[1:-1].strip()
    address = address[1:] if address.startswith("/") else address
    address = address[:-1] if address.endswith("/") else address
    parts = address.split("/")
    if len(parts) != 4 or not parts[1].strip() or not parts[3].strip():
        raise error_at(
            text,
            (literal.start_pos or 0) + 1,
            f"BrokeredEndpoint address {raw[1:-1]!r} must be /modules/{{module}}/inputs/{{input}}"
            " (four parts separated by '/', module and input not empty)",
        )
    if parts[0].lower() != "modules" or parts[2].lower() != "inputs":
        notes.append(
            f"BrokeredEndpoint address {raw[1:-1]!r} is read as module {parts[1]!r}, input {parts[3]!r}"
            " (as edgeHub does: only the 2nd and 4th parts count); write /modules/{module}/inputs/{input}"
        )
    return ModuleInputSink(parts[1], parts[3])


def _bad_sink(text: str, offset: int, message: str) -> QueryError:
    expected = 'expected $upstream or BrokeredEndpoint("/modules/{id}/inputs/{input}")'
    return error_at(text, offset, f"{message}; {expected}")
