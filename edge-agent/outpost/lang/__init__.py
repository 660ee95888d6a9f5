"""Outpost's two small languages: routes with their conditions, and target conditions.

* :func:`parse_route` reads ``FROM <source> [WHERE <condition>] INTO <sink>`` as edgeHub does.
* :func:`compile_condition` compiles a route condition (the WHERE part) with edgeHub's
  grammar, type checks and semantics into a fast predicate over a :class:`RoutingMessage`.
* :func:`compile_target` compiles a deployment's target condition into a predicate over
  a twin document.

All three raise :class:`outpost.errors.QueryError` (line, column, sentence) and nothing
else; compiled predicates never raise. See docs/languages.md.
"""

from outpost.lang.condition import Condition, compile_condition
from outpost.lang.emitter import Note
from outpost.lang.message import RoutingMessage
from outpost.lang.route import (
    ModuleInputSink,
    Route,
    Sink,
    Source,
    SourceKind,
    UpstreamSink,
    parse_route,
)
from outpost.lang.target import TargetCondition, compile_target
from outpost.lang.values import UNDEFINED, Undefined

__all__ = [
    "UNDEFINED",
    "Condition",
    "ModuleInputSink",
    "Note",
    "Route",
    "RoutingMessage",
    "Sink",
    "Source",
    "SourceKind",
    "TargetCondition",
    "Undefined",
    "UpstreamSink",
    "compile_condition",
    "compile_target",
    "parse_route",
]
