"""Route conditions: edgeHub's typing, answers and errors, Outpost's extensions and notes.

The full edgeHub test suites run as data in tests/conformance; these cases pin down the
behaviours users meet most and everything Outpost adds (notes, extensions, positions).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.errors import QueryError
from outpost.lang import UNDEFINED, Condition, RoutingMessage, compile_condition

JSON_SYSTEM = {"contentType": "application/json", "contentEncoding": "utf-8"}


def message(body: Any = None, *, properties: dict[str, str] | None = None, raw: bytes | None = None) -> RoutingMessage:
    """A UTF-8 JSON message."""
    payload = raw if raw is not None else json.dumps(body).encode()
    return RoutingMessage(properties or {}, JSON_SYSTEM, payload)


WEATHER = {
    "Weather": {
        "Temperature": 50,
        "Time": "2017-03-09T00:00:00.000Z",
        "PrevTemperatures": [20, 30, 40],
        "IsEnabled": True,
        "Location": {"Street": "One Microsoft Way", "City": "Redmond", "State": "WA"},
        "HistoricalData": [{"Month": "Feb", "Temperature": 40}, {"Month": "Jan", "Temperature": 30}],
        "Nothing": None,
        "Big": 10000000000000000000000000,
    }
}
PROPS = {"processingPath": "hot", "severity": "5", "verbose": "true", "name": "Outpost", "$custom": "from-app"}
SYSTEM = {**JSON_SYSTEM, "connectionDeviceId": "dev1", "connectionModuleId": "tempSensor", "custom": "from-system"}


def weather() -> RoutingMessage:
    return RoutingMessage(PROPS, SYSTEM, json.dumps(WEATHER).encode())


def check(text: str, expected: object, msg: RoutingMessage | None = None) -> None:
    msg = msg or weather()
    for guard in (True, False):  # unguarded: the helpers alone must not raise
        condition = compile_condition(text, guard=guard)
        assert condition.value(msg) is expected, text
        assert condition(msg) is (expected is True), text


ANSWERS = [
    # the IoT Hub / IoT Edge documentation's examples
    ("$contentEncoding = 'utf-8' AND processingPath = 'hot'", True),
    ("$body.Weather.HistoricalData[0].Month = 'Feb'", True),
    ("length($body.Weather.Location.State) = 2", True),
    ("$body.Weather.Temperature > 40 AND processingPath = 'hot'", True),
    ("is_defined($body.Weather.Location.City)", True),
    ("NOT IS_DEFINED($connectionModuleId)", False),
    ("$body.Weather.Location.City != 'Seattle'", True),
    # precedence: NOT binds tightest, then * / %, + -, comparisons, =, AND, OR, ??
    ("NOT false = true", True),
    ("2 + 3 * 4 = 14", True),
    ("true OR true AND false", True),
    ("1 < 2 = true", True),
    # numbers are C# doubles: division by zero is infinity, % by zero undefined
    ("3 / 0 > 1e308", True),
    ("-3 / 0 < 0", True),
    ("is_defined(3 % 0)", False),
    ("10e1000 > 1", True),
    ("AS_NUMBER('10000000000000000000000000') = 1e25", True),
    ("$body.Weather.Big = 1e25", True),
    ("-7 % 3 = -1", True),
    # null: NOT null is true, null AND x is null (false at the end), null = null is true
    ("NOT null", True),
    ("null AND true", False),
    ("null OR true", True),
    ("null = null", True),
    ("null < null", False),
    # $body values of different kinds compare by kind, missing paths are null
    ("$body.Weather.Temperature <> '50'", True),
    ("$body.Weather.Temperature = '50'", False),
    ("$body.Weather.Missing = null", True),
    ("$body.Weather.Nothing = null", True),
    ("is_defined($body.Weather.Missing)", True),
    ("is_null($body.Weather.Missing)", False),
    ("is_null($body.Weather.Nothing)", True),
    ("$body.Weather.Location = null", UNDEFINED),  # objects are undefined
    ("$body.Weather.Time <> 'x'", UNDEFINED),  # Json.NET reads this string as a date
    ("$body.weather.Temperature = 50", False),  # body paths are case-sensitive: missing, i.e. null
    # strings, properties and functions
    ("severity = '5'", True),
    ("AS_NUMBER(severity) = 5", True),
    ("concat(name, '!') = 'Outpost!'", True),
    ("name || '!' = 'Outpost!'", True),
    ("SUBSTRING(name, 3) = 'post'", True),
    ("is_defined(SUBSTRING(name, 5, 3))", False),  # past the end: undefined
    ("is_defined(SUBSTRING(name, 8))", False),
    ("SUBSTRING(name, 7) = ''", True),
    ("LOWER(name) = 'outpost' AND UPPER(name) = 'OUTPOST'", True),
    ("missing = 'x'", UNDEFINED),
    ("(missing ?? 'fallback') = 'fallback'", True),
    ("verbose", UNDEFINED),  # a string is not a Boolean
    ("$body.Weather.IsEnabled", True),
    # names: $name is the application property first, {$name} the system property only
    ("$custom = 'from-app'", True),
    ("{$custom} = 'from-system'", True),
    ("$CONNECTIONDEVICEID = 'dev1'", True),
    ("ProcessingPath = 'hot'", True),
    ("True = 'x'", UNDEFINED),  # True (capitalised) is a property; the literal is true
    # empty and non-Boolean conditions are undefined
    ("", UNDEFINED),
    ("3", UNDEFINED),
    ("'a string'", UNDEFINED),
]


@pytest.mark.parametrize(("text", "expected"), ANSWERS)
def test_edgehub_answers(text: str, expected: object) -> None:
    check(text, expected)


REFUSED = [
    # edgeHub's static type checks (RouteCompilationException at deployment)
    ("NOT name = 'x'", 1, 1, "NOT needs a Boolean; got a string"),
    ("length(12.34) = 5", 1, 1, "LENGTH takes (a string); got a number"),
    ("is_defined(3 + undefined)", 1, 14, "operator '+' needs numbers; got a number and undefined"),
    ("'a' + 'b' = 'ab'", 1, 5, "operator '+' needs numbers"),
    ("true AND $body.x", 1, 6, "a $body value only on the left"),
    ("null_value AND undefined", 1, 12, "operator 'AND' needs Booleans"),
    ("null AND undefined", 1, 6, "null cannot be combined with undefined"),
    ("- name", 1, 1, "unary '-' needs a number; got a string"),
    ("$body.x % 2 = 0", 1, 9, "'%' is not defined for $body values"),
    ("name = true", 1, 6, "needs two values of the same type"),
    ("CONCAT('a') = 'a'", 1, 1, "CONCAT takes two or more strings"),
    ("FOO(1) = 2", 1, 1, "unknown function 'FOO'; known: abs, as_number"),
    ("twin_change_includes(x)", 1, 1, "only available in routes from /twinChangeNotifications"),
    # syntax
    ("temperature >", 1, 14, "expected an expression after '>'"),
    ("x = 'abc", 1, 5, "unterminated string literal"),
    ("a == 1", 1, 4, "expected an expression, found '='"),
    ("(a = '1'", 1, 9, "missing closing ')'"),
    ("(a = '1'))", 1, 10, "unmatched closing ')'"),
    ("a = '1'\n  AND\n  b = @", 3, 7, "invalid symbol '@'"),
    ("a[0] = 'x'", 1, 1, "only a $body path may hold '[' or ']'"),
    ("$body.a[] = 1", 1, 1, "error in $body query 'a[]'"),
    ("$body.a..b = 1", 1, 1, "error in $body query"),
    ("NOT " * 50 + "true", 1, 161, "nests more than 40 levels"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), REFUSED)
def test_refused_like_edgehub_with_a_position(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_condition(text)
    assert fragment in info.value.reason, info.value.reason
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert info.value.text == text
    assert "^" in info.value.caret()


EXTENSIONS = [
    ("severity > 4", True, "number-property"),
    ("severity + 1 = 6", True, "number-property"),
    ("5 = severity", True, "number-property"),
    ("name > 4", UNDEFINED, "number-property"),
    ("processingPath IN ['cold', 'hot']", True, "in-list"),
    ("processingPath NIN ['cold', 'hot']", False, "in-list"),
    ("processingPath NOT IN ['cold']", True, "in-list"),
    ("$body.Weather.Temperature IN [10, 50]", True, "in-list"),
    ("processingPath IN []", False, "in-list"),
]


@pytest.mark.parametrize(("text", "expected", "extension"), EXTENSIONS)
def test_extensions_apply_only_where_edgehub_refuses_and_are_named(text: str, expected: object, extension: str) -> None:
    check(text, expected)
    condition = compile_condition(text)
    assert {note.deviation for note in condition.deviations} == {extension}
    assert all("edgeHub refuses this" in str(note) for note in condition.deviations)


def test_edgehub_valid_conditions_never_use_an_extension() -> None:
    for text, _ in ANSWERS:
        assert compile_condition(text).deviations == (), text


def test_quirks_edgehub_accepts_come_with_a_note() -> None:
    assert "read as an application property named 'True'" in str(compile_condition("True = 'x'").notes[0])
    trailing = compile_condition("name = 'Outpost' name")
    assert trailing.value(weather()) is True
    assert "is ignored" in str(trailing.notes[0])
    twin = compile_condition("$twin.tags.site = 'a'")
    assert "not a twin query" in str(twin.notes[0])


@pytest.mark.parametrize(
    ("system", "body", "defined"),
    [
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": 1}', True),
        ({"contentType": "Application/JSON", "contentEncoding": "UTF-8"}, b'{"t": 1}', True),
        ({"contentType": "application/json", "contentEncoding": "utf-16"}, '{"t": 1}'.encode("utf-16-le"), True),
        ({"contentType": "application/json", "contentEncoding": "UTF-32"}, '{"t": 1}'.encode("utf-32-le"), True),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'\xef\xbb\xbf{"t": 1}', True),
        ({"contentType": "application/json; charset=utf-8", "contentEncoding": "utf-8"}, b'{"t": 1}', False),
        ({"contentType": "application/json", "contentEncoding": "utf8"}, b'{"t": 1}', False),
        ({"contentType": "text/plain", "contentEncoding": "utf-8"}, b'{"t": 1}', False),
        ({"contentType": "application/json"}, b'{"t": 1}', False),
        ({"contentEncoding": "utf-8"}, b'{"t": 1}', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": ', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": NaN}', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b"[1, 2]", False),
        ({}, b"", False),
    ],
)
def test_body_needs_exactly_json_and_a_utf_encoding(system: dict[str, str], body: bytes, defined: bool) -> None:
    check("IS_DEFINED($body.t)", defined, RoutingMessage({}, system, body))


def test_body_is_parsed_at_most_once() -> None:
    msg = message({"t": 1})
    first = msg.json_body()
    assert first == {"t": 1}
    assert msg.json_body() is first
    assert message(raw=b"not json").json_body() is UNDEFINED


def test_deeply_nested_body_is_undefined_not_an_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert message(raw=deep).json_body() is UNDEFINED
    check("IS_DEFINED($body.x)", False, message(raw=deep))


def test_condition_object() -> None:
    condition = compile_condition("severity = 'high'")
    assert isinstance(condition, Condition)
    assert condition.text == "severity = 'high'"
    assert condition == compile_condition("severity = 'high'")
    assert hash(condition) == hash(compile_condition("severity = 'high'"))
    assert condition != compile_condition("severity = 'low'")
    assert "severity" in repr(condition)
    assert condition.evaluate(message(properties={"severity": "high"})) is True


def test_keywords_are_case_insensitive_but_literals_are_lowercase() -> None:
    check("true aNd NoT false Or null", True)
    with pytest.raises(QueryError, match="needs two values of the same type"):
        compile_condition("TRUE = true")  # TRUE is a property (a string)


def test_names_hold_operators_unless_spaced_like_edgehub() -> None:
    props = {"x-y": "1", "a.b": "2", "x": "10", "y": "3", "3+4": "seven"}
    msg = RoutingMessage(props, {}, b"")
    check("x-y = '1'", True, msg)
    check("a.b = '2'", True, msg)
    check("AS_NUMBER(x) - AS_NUMBER(y) = 7", True, msg)
    check("3+4 = 'seven'", True, msg)
    check("3 + 4 = 7", True, msg)


def test_evaluator_never_raises_on_odd_inputs() -> None:
    condition = compile_condition("$body.a > 1 OR severity = 'x' OR $contentType = 'y' OR LENGTH(z) = 1")
    odd = [
        RoutingMessage({}, {}, b""),
        RoutingMessage({"severity": None}, {"contentType": None}, None),  # type: ignore[dict-item, arg-type]
        RoutingMessage(None, None, None),  # type: ignore[arg-type]
        object(),
    ]
    for msg in odd:
        assert condition(msg) is False  # type: ignore[arg-type]


def test_long_chains_are_flattened_not_rejected() -> None:
    text = " OR ".join(f"x = '{i}'" for i in range(300))
    check(text, True, RoutingMessage({"x": "299"}, {}, b""))


def test_non_text_is_a_query_error() -> None:
    with pytest.raises(QueryError):
        compile_condition(None)  # type: ignore[arg-type]
