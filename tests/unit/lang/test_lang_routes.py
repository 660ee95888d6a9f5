"""Routes: sources, sinks, WHERE clauses, matching and error positions."""

from __future__ import annotations

import pytest

from outpost.errors import QueryError
from outpost.lang import (
    ModuleInputSink,
    Route,
    RoutingMessage,
    Source,
    SourceKind,
    UpstreamSink,
    parse_route,
)

JSON = {"contentType": "application/json", "contentEncoding": "utf-8"}

SOURCES = [
    ("/*", Source(SourceKind.ALL)),
    ("/twinChangeNotifications", Source(SourceKind.TWIN_CHANGES)),
    ("/messages/*", Source(SourceKind.MESSAGES)),
    ("/messages/modules/*", Source(SourceKind.ALL_MODULES)),
    ("/messages/modules/tempSensor/*", Source(SourceKind.MODULE, "tempSensor")),
    ("/messages/modules/temp-sensor.v2_1/outputs/*", Source(SourceKind.MODULE_OUTPUTS, "temp-sensor.v2_1")),
    (
        "/messages/modules/tempSensor/outputs/temperatureOutput",
        Source(SourceKind.MODULE_OUTPUT, "tempSensor", "temperatureOutput"),
    ),
]


# edgeHub reads a source as a prefix: no '*' is needed, a trailing '/' is dropped.
PREFIX_SOURCES = [
    ("/", "/messages/modules", Source(SourceKind.ALL_MODULES)),
    ("/", "/messages", Source(SourceKind.MESSAGES)),
    ("/", "/messages/modules/publisher", Source(SourceKind.MODULE, "publisher")),
    ("/", "/messages/modules/publisher/outputs", Source(SourceKind.MODULE_OUTPUTS, "publisher")),
    ("/", "/messages/modules/outputs", Source(SourceKind.MODULE, "outputs")),
    ("/", "/messages/modules/a'b/outputs/o!1", Source(SourceKind.MODULE_OUTPUT, "a'b", "o!1")),
]


@pytest.mark.parametrize(("_", "text", "source"), PREFIX_SOURCES)
def test_prefix_sources(_: str, text: str, source: Source) -> None:
    route = parse_route(f"FROM {text} INTO $upstream")
    assert route.source == source
    assert route.deviations == ()


def test_prefix_source_matching_is_case_insensitive_and_by_segment() -> None:
    route = parse_route("FROM /messages/modules/Publisher INTO $upstream")
    msg = RoutingMessage({}, {}, b"")
    assert route.matches(msg, module_id="publisher", output="out")
    assert route.matches(msg, module_id="Publisher", output=None)
    assert not route.matches(msg, module_id="publisher2", output="out")
    assert not route.matches(msg, module_id=None, output=None)
    output = parse_route("FROM /messages/modules/p/outputs/Alerts INTO $upstream")
    assert output.matches(msg, module_id="P", output="alerts")
    assert not output.matches(msg, module_id="p", output="alerts2")


def test_sources_that_select_nothing_or_use_a_literal_star_are_accepted_with_a_note() -> None:
    nothing = parse_route("FROM /foo/bar INTO $upstream")
    assert nothing.source == Source(SourceKind.NOTHING, path="/foo/bar")
    assert not nothing.matches(RoutingMessage({}, {}, b""), module_id="foo", output="bar")
    assert nothing.deviations == ()
    assert "selects no message" in str(nothing.notes[0])
    star = parse_route("FROM /messages/modules/*/outputs/alerts INTO $upstream")
    assert star.source == Source(SourceKind.MODULE_OUTPUT, "*", "alerts")
    assert "literal character" in str(star.notes[0])


def test_brokered_endpoint_shapes_edgehub_accepts() -> None:
    quoted = parse_route('FROM /* INTO BrokeredEndpoint("/modules/alert\'Logic/inputs/in")')
    assert quoted.sink == ModuleInputSink("alert'Logic", "in")
    assert quoted.notes == ()
    double = parse_route("FROM /* INTO brokeredEndpoint('/modules/alert\"Logic/inputs/in')")
    assert double.sink == ModuleInputSink('alert"Logic', "in")
    assert str(double.sink) == "BrokeredEndpoint('/modules/alert\"Logic/inputs/in')"
    odd = parse_route('FROM /messages/modules/adapter INTO brokeredEndpoint("/a/b/c/d")')
    assert odd.sink == ModuleInputSink("b", "d")
    assert "read as module 'b', input 'd'" in str(odd.notes[0])
    spaced = parse_route('FROM /* INTO BrokeredEndpoint(" modules/x/inputs/y/ ")')
    assert spaced.sink == ModuleInputSink("x", "y")


@pytest.mark.parametrize(("text", "source"), SOURCES)
def test_sources(text: str, source: Source) -> None:
    route = parse_route(f"FROM {text} INTO $upstream")
    assert route.source == source
    assert str(route.source) == text


SINKS = [
    ("$upstream", UpstreamSink()),
    ("$UpStream", UpstreamSink()),
    ('BrokeredEndpoint("/modules/filter/inputs/input1")', ModuleInputSink("filter", "input1")),
    ('brokeredendpoint("/modules/my-mod.v2/inputs/in_2")', ModuleInputSink("my-mod.v2", "in_2")),
    ("BrokeredEndpoint('/modules/filter/inputs/input1')", ModuleInputSink("filter", "input1")),
]


@pytest.mark.parametrize(("text", "sink"), SINKS)
def test_sinks(text: str, sink: UpstreamSink | ModuleInputSink) -> None:
    route = parse_route(f"FROM /* INTO {text}")
    assert route.sink == sink
    assert route.condition is None


def test_documented_routes() -> None:
    route = parse_route(
        "FROM /messages/modules/tempSensor/outputs/temperatureOutput "
        'INTO BrokeredEndpoint("/modules/filtermodule/inputs/input1")'
    )
    assert route.source == Source(SourceKind.MODULE_OUTPUT, "tempSensor", "temperatureOutput")
    assert route.sink == ModuleInputSink("filtermodule", "input1")
    assert str(route.sink) == 'BrokeredEndpoint("/modules/filtermodule/inputs/input1")'
    leaf = parse_route("FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream")
    assert leaf.condition is not None
    assert leaf.condition.text == "NOT IS_DEFINED($connectionModuleId)"
    assert str(leaf.sink) == "$upstream"


def test_keywords_case_and_whitespace() -> None:
    text = "select *\n  from\t/messages/*\n  wHeRe\n    severity = 'high'\n    and $body.t > 1\n  InTo\n$upstream"
    route = parse_route(text)
    assert isinstance(route, Route)
    assert route.text == text
    assert route.condition is not None
    assert route.condition.text == "severity = 'high'\n    and $body.t > 1"
    msg = RoutingMessage({"severity": "high"}, JSON, b'{"t": 2}')
    assert route.matches(msg, module_id=None, output=None)
    assert not route.matches(RoutingMessage({"severity": "low"}, JSON, b'{"t": 2}'), module_id=None, output=None)


# (source, module_id, output, is_message) -> selected
MATCHES = [
    ("/*", None, None, True, True),
    ("/*", "m", "o", True, True),
    ("/*", None, None, False, True),
    ("/twinChangeNotifications", None, None, False, True),
    ("/twinChangeNotifications", "m", None, True, False),
    ("/messages/*", None, None, True, True),
    ("/messages/*", "m", "o", True, True),
    ("/messages/*", "m", None, False, False),
    ("/messages/modules/*", None, None, True, False),
    ("/messages/modules/*", "m", None, True, True),
    ("/messages/modules/*", "m", "o", True, True),
    ("/messages/modules/m/*", "m", None, True, True),
    ("/messages/modules/m/*", "m", "o", True, True),
    ("/messages/modules/m/*", "n", "o", True, False),
    ("/messages/modules/m/*", None, None, True, False),
    ("/messages/modules/m/outputs/*", "m", "o", True, True),
    ("/messages/modules/m/outputs/*", "m", None, True, False),
    ("/messages/modules/m/outputs/*", "n", "o", True, False),
    ("/messages/modules/m/outputs/o", "m", "o", True, True),
    ("/messages/modules/m/outputs/o", "m", "p", True, False),
    ("/messages/modules/m/outputs/o", "n", "o", True, False),
    ("/messages/modules/m/outputs/o", None, None, True, False),
    ("/messages/modules/m/outputs/o", "m", "o", False, False),
]


@pytest.mark.parametrize(("source", "module_id", "output", "is_message", "selected"), MATCHES)
def test_source_matching(
    source: str, module_id: str | None, output: str | None, is_message: bool, selected: bool
) -> None:
    route = parse_route(f"FROM {source} INTO $upstream")
    assert route.source.matches(module_id=module_id, output=output, is_message=is_message) is selected
    msg = RoutingMessage({}, {}, b"")
    assert route.matches(msg, module_id=module_id, output=output, is_message=is_message) is selected


def test_route_matches_needs_source_and_condition() -> None:
    route = parse_route("FROM /messages/modules/sensor/* WHERE $body.temperature > 50 INTO $upstream")
    hot = RoutingMessage({}, JSON, b'{"temperature": 60}')
    cold = RoutingMessage({}, JSON, b'{"temperature": 40}')
    assert route.matches(hot, module_id="sensor", output="out")
    assert not route.matches(cold, module_id="sensor", output="out")
    assert not route.matches(hot, module_id="other", output="out")


def test_routes_are_values() -> None:
    a = parse_route("FROM /* WHERE a = 1 INTO $upstream")
    assert a == parse_route("FROM /* WHERE a = 1 INTO $upstream")
    assert hash(a) == hash(parse_route("FROM /* WHERE a = 1 INTO $upstream"))
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]


ERRORS = [
    ("FROM /messages/* WHERE temperature > INTO $upstream", 1, 38, "expected an expression after '>', found INTO"),
    ("FROM /messages/* $upstream", 1, 18, "expected WHERE or INTO after the source, found '$upstream'"),
    ("FROM /messages/* WHERE a = '1'", 1, 31, "AND, OR or INTO, found the end of the text"),
    ("FROM /messages/* WHERE a = '1' $upstream", 1, 32, "expected an operator, AND, OR or INTO, found '$upstream'"),
    ("FROM /messages/*\nWHERE x = 'abc INTO $upstream", 2, 11, "unterminated string literal"),
    ("FROM /* WHERE FOO(x) = 1 INTO $upstream", 1, 15, "unknown function 'FOO'"),
    (
        "FROM /* WHERE\n  a = '1' AND\n  LENGTH(a, b) = 1\nINTO $upstream",
        3,
        3,
        "LENGTH takes (a string); got a string, a string",
    ),
    ('FROM /* INTO BrokeredEndpoint("/modules/x/inputs")', 1, 32, "must be /modules/{module}/inputs/{input}"),
    ('FROM /* INTO BrokeredEndpoint("/modules//inputs/z")', 1, 32, "module and input not empty"),
    ('FROM /* INTO BrokeredEndpoint("/a/b/c/d/e")', 1, 32, "four parts"),
    ("FROM /* INTO BrokeredEndpoint(/modules/x/inputs/y)", 1, 31, "expected a quoted string after '('"),
    ('FROM /* INTO Endpoint("/modules/x/inputs/y")', 1, 14, "unknown sink function 'Endpoint'"),
    ("FROM /* INTO $downstream", 1, 14, "unknown sink '$downstream'"),
    ("FROM /* INTO", 1, 13, 'expected $upstream or BrokeredEndpoint("..."), found the end of the text'),
    ("FROM /messages/modules/a b/* INTO $upstream", 1, 26, "expected WHERE or INTO after the source"),
    ("FROM messages/* INTO $upstream", 1, 6, "after FROM"),
    ("FROM / INTO $upstream", 1, 8, "expected a source part after '/', found INTO"),
    ("FROM", 1, 5, "expected a source such as /messages/* after FROM, found the end of the text"),
    ("", 1, 1, "the route is empty"),
    ("FROM /* WHERE a = true INTO $upstream", 1, 17, "needs two values of the same type"),
    ("INTO $upstream", 1, 1, "expected SELECT or FROM, found INTO"),
    ("FROM /* WHERE INTO $upstream", 1, 15, "expected an expression after WHERE, found INTO"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERRORS)
def test_route_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_route(text)
    error = info.value
    assert fragment in error.reason, error.reason
    assert (error.line, error.column) == (line, column), str(error)
    assert error.text == text


def test_what_edgehub_accepts_but_is_likely_a_slip_comes_with_a_note() -> None:
    extra = parse_route("FROM /* INTO $upstream extra")
    assert extra.sink == UpstreamSink()
    assert "is ignored" in str(extra.notes[0])
    twin = parse_route("FROM /* WHERE $twin.tags.a = '1' INTO $upstream")
    assert "not a twin query" in str(twin.notes[0])


def test_route_extensions_are_named() -> None:
    route = parse_route("FROM /messages/* WHERE severity >= 3 AND level IN ['warning', 'critical'] INTO $upstream")
    assert {note.deviation for note in route.deviations} == {"number-property", "in-list"}
    assert route.condition is not None
    assert route.condition.text == "severity >= 3 AND level IN ['warning', 'critical']"
    msg = RoutingMessage({"severity": "4", "level": "critical"}, {}, b"")
    assert route.matches(msg, module_id=None, output=None)
