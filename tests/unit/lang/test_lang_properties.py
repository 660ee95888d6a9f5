"""Property-based tests: parsers raise QueryError or nothing; evaluators never raise."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from outpost.errors import QueryError
from outpost.lang import RoutingMessage, compile_condition, compile_target, parse_route
from outpost.lang.condition import Condition

VALID_ROUTES = [
    "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream",
    "FROM /messages/modules/tempSensor/outputs/temperatureOutput "
    'INTO BrokeredEndpoint("/modules/filter/inputs/input1")',
    "FROM /messages/modules/a/* WHERE $body.temperature > 50 AND severity = 'high' INTO $upstream",
    'SELECT * FROM /* WHERE (a + 1) * 2 >= -3.5e1 OR LOWER($contentType) <> "x" INTO $upstream',
]
VALID_CONDITIONS = [
    "$body.temperature > 50 AND severity = 'high'",
    "$body.a.b[2].c = 'x' OR IS_DEFINED($body.x[0])",
    "CONCAT(a, 'b', $messageId) = 'x' AND SUBSTRING(a, 1, 2) != 'q' AND POWER(AS_NUMBER(a), 2) % 3 = 1",
    "a IN ['1', 'x', s] AND NOT (b NIN []) AND ABS(- AS_NUMBER(a)) / SQRT(AS_NUMBER(b)) < EXP(AS_NUMBER(c))",
    "AS_NUMBER(s) + SIGN(AS_NUMBER(t)) - FLOOR(AS_NUMBER(u)) * CEILING(AS_NUMBER(v)) = SQUARE(AS_NUMBER(w))"
    " AND INDEX_OF(x, y) >= LENGTH(z)",
    "$body.t AND ($body.a ?? $body.b <> null OR {$body.x} || a = 'q') AND $body.x / 0 > -1 AND NOT null",
    "severity > 4 AND a + 1 = 2 AND upper(lower($x)) = 'Y'",
]
VALID_TARGETS = [
    "tags.environment = 'test' AND properties.reported.devicemodel = '4000x'",
    "deviceId IN ['a', 'b'] OR NOT IS_DEFINED(tags.x[0].y) OR properties.desired.v NOT IN [1, 2]",
    "*",
]
ALPHABET = "FROMWHEREINTOANDORNOTINfromwhereinto$body.[]()'\"\\/*=<>!+-%,0123456789 \n\tabcxyz_"

arbitrary_text = st.text(max_size=120) | st.text(alphabet=ALPHABET, max_size=120)


def mutated(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid text with a random slice replaced, deleted or duplicated."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(valid))
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 12)))
        insert = draw(st.text(alphabet=ALPHABET, max_size=8) | st.sampled_from(["", text[start:end] * 2]))
        return text[:start] + insert + text[end:]

    return build()


def parses_or_query_error(function: Any, text: str) -> None:
    error: QueryError | None = None
    try:
        function(text)
    except QueryError as exc:
        error = exc
    if error is not None:
        assert error.line >= 1
        assert error.column >= 1
        assert error.reason
        assert error.caret()


@settings(max_examples=400, deadline=None)
@given(arbitrary_text | mutated(VALID_ROUTES))
def test_parse_route_raises_only_query_error(text: str) -> None:
    parses_or_query_error(parse_route, text)


@settings(max_examples=400, deadline=None)
@given(arbitrary_text | mutated(VALID_CONDITIONS))
def test_compile_condition_raises_only_query_error(text: str) -> None:
    parses_or_query_error(compile_condition, text)


@settings(max_examples=400, deadline=None)
@given(arbitrary_text | mutated(VALID_TARGETS))
def test_compile_target_raises_only_query_error(text: str) -> None:
    parses_or_query_error(compile_target, text)


def unguarded(text: str) -> Condition:
    return compile_condition(text, guard=False)


UNGUARDED = [unguarded(text) for text in VALID_CONDITIONS]
NAMES = st.sampled_from(["a", "b", "c", "s", "t", "u", "v", "w", "x", "y", "z", "severity", "$x", "A"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(NAMES | st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def messages(draw: st.DrawFn) -> RoutingMessage:
    properties = draw(
        st.dictionaries(
            NAMES | st.text(max_size=4), st.text(max_size=6) | st.sampled_from(["1", "-2.5", "1e3", "true"])
        )
    )
    encoding = draw(st.sampled_from(["utf-8", "UTF-16", "utf-32", "utf8", "latin-1"]))
    system = {"contentType": draw(st.sampled_from(["application/json", "text/plain"])), "contentEncoding": encoding}
    system.update(draw(st.dictionaries(st.sampled_from(["messageId", "connectionModuleId"]), st.text(max_size=4))))
    if draw(st.booleans()):
        codec = "utf-8" if encoding in ("latin-1", "utf8") else encoding
        body = json.dumps(draw(json_values)).encode(codec)
    else:
        body = draw(st.binary(max_size=40))
    return RoutingMessage(properties, system, body)


@settings(max_examples=400, deadline=None)
@given(messages())
def test_conditions_never_raise_even_without_the_safety_net(message: RoutingMessage) -> None:
    for condition in UNGUARDED:
        assert condition(message) in (True, False)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_target_conditions_never_raise(tags: object, reported: object) -> None:
    twin = {"deviceId": "d", "tags": tags, "properties": {"reported": reported, "desired": tags}}
    for text in VALID_TARGETS:
        assert compile_target(text)(twin) in (True, False)


FIXED_MESSAGES = [
    RoutingMessage({}, {}, b""),
    RoutingMessage(
        {"a": "1", "b": "x", "s": "2.5", "severity": "high", "$x": "y"},
        {"contentType": "application/json", "contentEncoding": "utf-8", "messageId": "m"},
        b'{"temperature": 60, "a": {"b": [0, 1, {"c": "x"}]}, "x": [null, true, 1e300, -0.0, "s", {}, []]}',
    ),
    RoutingMessage(
        {"a": "", "x": "0", "y": "-0"}, {"contentType": "application/json", "contentEncoding": "utf-8"}, b"[]"
    ),
]


@settings(max_examples=400, deadline=None)
@given(mutated(VALID_CONDITIONS))
def test_mutated_conditions_evaluate_without_raising(text: str) -> None:
    try:
        condition = unguarded(text)
    except QueryError:
        return
    for message in FIXED_MESSAGES:
        assert condition(message) in (True, False)
