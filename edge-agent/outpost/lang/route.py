"""Routes: ``[SELECT *] FROM <source> [WHERE <condition>] INTO <sink>``, as edgeHub reads them.

``syntax.py`` parses the text with edgeHub's grammar; here the source becomes a prefix
match and the sink an endpoint, the way edgeHub's RouteFactory, CustomMessageSource and
EndpointFactory do it. The WHERE clause is compiled from the same parse, so its errors
carry their position in the whole route text. Where edgeHub accepts something that is
probably a mistake (a source that selects nothing, ``/a/b/c/d`` as an address), the route
carries a ``Note`` that ``outpost manifest validate`` shows as a warning.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from outpost.errors import QueryError
from outpost.lang.condition import Condition, compile_parsed
from outpost.lang.emitter import Note
from outpost.lang.lexer import Token
from outpost.lang.message import RoutingMessage
from outpost.lang.parser import error_at
from outpost.lang.syntax import parse_route_syntax

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

    @property
    def prefix(self) -> str:
        """edgeHub's form of this source: the lower-case prefix of the message source paths it selects."""
        return (str(self).strip().rstrip("*").rstrip("/") + "/").lower()

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

    ``notes`` name the Outpost extensions the route relies on and what edgeHub accepts but
    is likely a mistake (``outpost manifest validate`` shows them as warnings).
    """

    text: str
    source: Source
    condition: Condition | None
    sink: Sink
    notes: tuple[Note, ...] = ()

    @property
    def deviations(self) -> tuple[Note, ...]:
        """The notes that name an Outpost extension edgeHub would refuse."""
        return tuple(note for note in self.notes if note.deviation is not None)

    def matches(
        self, message: RoutingMessage, *, module_id: str | None, output: str | None, is_message: bool = True
    ) -> bool:
        """Whether this route takes ``message`` (source first: it is the cheaper test)."""
        if not self.source.matches(module_id=module_id, output=output, is_message=is_message):
            return False
        return self.condition is None or self.condition.evaluate(message)


def parse_route(text: str) -> Route:
    """Parse a route; raise QueryError with the line and column of the first problem."""
    if isinstance(text, str) and not text.strip():
        raise QueryError("the route is empty; expected FROM <source> [WHERE <condition>] INTO <sink>", text=text)
    syntax = parse_route_syntax(text)
    notes: list[Note] = []
    condition = None
    if syntax.condition is not None and syntax.condition_text is not None:
        condition = compile_parsed(text, syntax.condition, syntax.condition_text)
        notes.extend(condition.notes)
    source = _source(syntax.source, notes)
    sink = _sink(text, syntax.sink, syntax.address, notes)
    if syntax.ignored is not None:
        notes.append(Note(f"text after the sink (column {syntax.ignored.start + 1}) is ignored, as edgeHub ignores it"))
    return Route(text, source, condition, sink, tuple(notes))


def _source(path: str, notes: list[Note]) -> Source:
    # edgeHub (CustomMessageSource, BaseMessageSource): drop trailing '*', then '/', add one '/'.
    trimmed = path.strip().rstrip("*")
    prefix = (trimmed.rstrip("/") if len(trimmed) > 1 else trimmed).rstrip("/") + "/"
    kind = _FIXED_SOURCES.get(prefix.lower())
    if kind is not None:
        return Source(kind)
    match = _MODULE_SOURCE.fullmatch(prefix)
    if match is None:
        notes.append(
            Note(
                f"source {path!r} selects no message (sources are prefixes of /messages/modules/{{id}}/outputs/"
                "{output}, /messages or /twinChangeNotifications); edgeHub accepts it too"
            )
        )
        return Source(SourceKind.NOTHING, path=path)
    module, outputs, output = match.groups()
    if "*" in module or (output is not None and "*" in output):
        notes.append(Note(f"'*' in source {path!r} is a literal character, not a wildcard (only a trailing '*' is)"))
    if output is not None:
        return Source(SourceKind.MODULE_OUTPUT, module, output)
    if outputs is not None:
        return Source(SourceKind.MODULE_OUTPUTS, module)
    return Source(SourceKind.MODULE, module)


def _sink(text: str, name: Token, literal: Token | None, notes: list[Note]) -> Sink:
    offset = name.start
    if literal is None:
        if name.text.lower() == "$upstream":
            return UpstreamSink()
        raise _bad_sink(text, offset, f"unknown sink {name.text!r}")
    if name.text.lower() != "brokeredendpoint":
        raise _bad_sink(text, offset, f"unknown sink function {name.text!r}")
    raw = literal.text
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
            literal.start + 1,
            f"BrokeredEndpoint address {raw[1:-1]!r} must be /modules/{{module}}/inputs/{{input}}"
            " (four parts separated by '/', module and input not empty)",
        )
    if parts[0].lower() != "modules" or parts[2].lower() != "inputs":
        notes.append(
            Note(
                f"BrokeredEndpoint address {raw[1:-1]!r} is read as module {parts[1]!r}, input {parts[3]!r}"
                " (as edgeHub does: only the 2nd and 4th parts count); write /modules/{module}/inputs/{input}"
            )
        )
    return ModuleInputSink(parts[1], parts[3])


def _bad_sink(text: str, offset: int, message: str) -> QueryError:
    expected = 'expected $upstream or BrokeredEndpoint("/modules/{id}/inputs/{input}")'
    return error_at(text, offset, f"{message}; {expected}")
