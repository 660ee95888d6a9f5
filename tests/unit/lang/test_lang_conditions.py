"""Route conditions: parsing and evaluation against messages (IoT Hub routing query language)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outpost.errors import QueryError
from outpost.lang import UNDEFINED, Condition, RoutingMessage, compile_condition
from outpost.lang.condition import condition_from_tree
from outpost.lang.parser import parse

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
        "Ratio": 0.5,
    }
}
PROPS = {"processingPath": "hot", "severity": "5", "verbose": "true", "ratio": "2.5", "name": "Outpost"}
SYSTEM = {**JSON_SYSTEM, "connectionDeviceId": "dev1", "connectionModuleId": "tempSensor", "messageId": "m-1"}


def weather() -> RoutingMessage:
    return RoutingMessage(PROPS, SYSTEM, json.dumps(WEATHER).encode())


def unguarded(text: str) -> Condition:
    """The condition compiled without its last-resort ``try``: any helper bug raises."""
    return condition_from_tree(text, parse(text, "start_condition").children[0], text, guard=False)


def check(text: str, expected: bool, msg: RoutingMessage | None = None) -> None:
    msg = msg or weather()
    assert compile_condition(text)(msg) is expected, text
    assert unguarded(text)(msg) is expected, text


# Examples from the IoT Hub routing query syntax article and the IoT Edge docs.
DOC_EXAMPLES = [
    ("$contentEncoding = 'UTF-8'", False),  # case-sensitive string compare: the message says utf-8
    ("$contentEncoding = 'utf-8'", True),
    ("processingPath = 'hot'", True),
    ("$contentEncoding = 'utf-8' AND processingPath = 'hot'", True),
    ("$body.Weather.HistoricalData[0].Month = 'Feb'", True),
    ("$body.Weather.Temperature = 50 AND $body.Weather.IsEnabled", True),
    ("length($body.Weather.Location.State) = 2", True),
    ("$body.Weather.Temperature = 50 AND processingPath = 'hot'", True),
    ("is_defined($body.Weather.Location)", True),
    ("NOT IS_DEFINED($connectionModuleId)", False),
    ('$body.Weather.Location.City != "Seattle"', True),
    ("$body[0] = 'Feb'", False),
]


@pytest.mark.parametrize(("text", "expected"), DOC_EXAMPLES)
def test_documented_examples(text: str, expected: bool) -> None:
    check(text, expected)


OPERATORS = [
    # comparison
    ("$body.Weather.Temperature > 49", True),
    ("$body.Weather.Temperature >= 50", True),
    ("$body.Weather.Temperature < 50", False),
    ("$body.Weather.Temperature <= 50", True),
    ("$body.Weather.Temperature <> 50", False),
    ("$body.Weather.Temperature != 51", True),
    ("50 = $body.Weather.Temperature", True),
    ("49 < $body.Weather.Temperature", True),
    ("$body.Weather.Location.City > 'A'", True),
    ("$body.Weather.Location.City = $body.Weather.Location.City", True),
    ("$body.Weather.Temperature = $body.Weather.HistoricalData[0].Temperature + 10", True),
    ("$body.Weather.IsEnabled = true", True),
    ("$body.Weather.IsEnabled != false", True),
    ("$body.Weather.Nothing = null", True),
    ("1 = 1.0", True),
    ("'a' < 'b'", True),
    # arithmetic
    ("$body.Weather.Temperature + 1 = 51", True),
    ("$body.Weather.Temperature - 60 = -10", True),
    ("$body.Weather.Temperature * 2 = 100", True),
    ("$body.Weather.Temperature / 4 = 12.5", True),
    ("$body.Weather.Temperature % 7 = 1", True),
    ("-7 % 3 = -1", True),
    ("7.5 % 2 = 1.5", True),
    ("-$body.Weather.Temperature = -50", True),
    ("+$body.Weather.Temperature = 50", True),
    ("2 + 3 * 4 = 14", True),
    ("(2 + 3) * 4 = 20", True),
    ("10 - 2 - 3 = 5", True),
    ("0x1F = 31", True),
    ("1.5e2 = 150", True),
    (".5 = 0.5", True),
    # logic and precedence
    ("true AND true", True),
    ("true AND false", False),
    ("false OR true", True),
    ("NOT false", True),
    ("NOT 1 = 2", True),
    ("true OR true AND false", True),
    ("(true OR true) AND false", False),
    ("NOT NOT true", True),
    ("true AND true AND true AND false", False),
    ("false OR false OR false OR true", True),
    # membership (an extension shared with target conditions)
    ("processingPath IN ['cold', 'hot']", True),
    ("processingPath NIN ['cold', 'hot']", False),
    ("processingPath NOT IN ['cold']", True),
    ("$body.Weather.Temperature IN [10, 50]", True),
    ("$body.Weather.Temperature IN []", False),
    # escapes
    ("'it\\'s' = \"it's\"", True),
    ("'\\u0041' = 'A'", True),
    ("'a\\\\b' = CONCAT('a', '\\\\', 'b')", True),
]


@pytest.mark.parametrize(("text", "expected"), OPERATORS)
def test_operators(text: str, expected: bool) -> None:
    check(text, expected)


FUNCTIONS = [
    ("IS_DEFINED($body.Weather.Temperature)", True),
    ("IS_DEFINED($body.Weather.Missing)", False),
    ("IS_DEFINED($body.Weather.Nothing)", True),
    ("IS_NULL($body.Weather.Nothing)", True),
    ("IS_NULL($body.Weather.Missing)", False),
    ("IS_BOOL($body.Weather.IsEnabled)", True),
    ("IS_BOOL(verbose)", False),  # properties are strings
    ("IS_NUMBER($body.Weather.Temperature)", True),
    ("IS_NUMBER(severity)", False),
    ("IS_STRING(severity)", True),
    ("IS_STRING($body.Weather.Time)", True),
    ("IS_ARRAY($body.Weather.PrevTemperatures)", True),
    ("IS_ARRAY($body.Weather.Location)", False),
    ("IS_OBJECT($body.Weather.Location)", True),
    ("IS_PRIMITIVE($body.Weather.Nothing)", True),
    ("IS_PRIMITIVE($body.Weather.Location)", False),
    ("IS_PRIMITIVE($body.Weather.Missing)", False),
    ("AS_NUMBER(severity) = 5", True),
    ("AS_NUMBER('2.5e1') = 25", True),
    ("AS_NUMBER($body.Weather.Temperature) = 50", True),
    ("IS_DEFINED(AS_NUMBER('abc'))", False),
    ("ABS(-3) = 3", True),
    ("ABS($body.Weather.Temperature - 60) = 10", True),
    ("EXP(0) = 1", True),
    ("POWER(2, 10) = 1024", True),
    ("POWER(4, 0.5) = 2", True),
    ("SQUARE(severity) = 25", True),
    ("CEILING(1.2) = 2", True),
    ("FLOOR(-1.2) = -2", True),
    ("SIGN(-4) = -1", True),
    ("SIGN(0) = 0", True),
    ("SIGN(ratio) = 1", True),
    ("SQRT(16) = 4", True),
    ("CONCAT('a', 'b', 'c') = 'abc'", True),
    ("CONCAT(processingPath, '-', $connectionDeviceId) = 'hot-dev1'", True),
    ("IS_DEFINED(CONCAT('a', 1))", False),
    ("LENGTH(name) = 7", True),
    ("LOWER(name) = 'outpost'", True),
    ("UPPER(name) = 'OUTPOST'", True),
    ("SUBSTRING(name, 3) = 'post'", True),
    ("SUBSTRING(name, 0, 3) = 'Out'", True),
    ("SUBSTRING(name, 5, 100) = 'st'", True),
    ("IS_DEFINED(SUBSTRING(name, -1))", False),
    ("INDEX_OF(name, 'post') = 3", True),
    ("INDEX_OF(name, 'x') = -1", True),
    ("STARTS_WITH(name, 'Out')", True),
    ("ENDS_WITH(name, 'post')", True),
    ("CONTAINS(name, 'tpo')", True),
    ("CONTAINS(name, 'xyz')", False),
    ("is_defined(severity)", True),
    ("Is_Defined(severity) aNd LoWeR(name) = 'outpost'", True),
]


@pytest.mark.parametrize(("text", "expected"), FUNCTIONS)
def test_functions(text: str, expected: bool) -> None:
    check(text, expected)


UNDEFINED_CASES = [
    # missing names
    ("missing = 'x'", False),
    ("missing != 'x'", False),
    ("NOT (missing = 'x')", False),
    ("missing = 'x' OR true", True),
    ("missing = 'x' AND false", False),
    ("NOT (missing = 'x' AND true)", False),
    ("$body.Weather.Missing.Deeper = 1", False),
    ("$body.Weather.PrevTemperatures[3] = 1", False),
    ("$body.Weather.PrevTemperatures[2] = 40", True),
    ("$body.Weather.Location[0] = 1", False),
    ("$body.Weather.PrevTemperatures.x = 1", False),
    ("undefined = undefined", False),
    ("IS_DEFINED(undefined)", False),
    # mismatched types and bad arithmetic
    ("$body.Weather.Temperature = '50'", False),
    ("$body.Weather.Temperature != '50'", False),
    ("$body.Weather.Location = $body.Weather.Location", False),
    ("$body.Weather.IsEnabled > false", False),
    ("null = 0", False),
    ("null != 0", False),
    ("1 / 0 = 1", False),
    ("NOT (1 / 0 = 1)", False),
    ("1 % 0 = 1", False),
    ("'a' + 1 = 2", False),
    ("SQRT(-1) = 0", False),
    ("EXP(100000) > 0", False),
    ("POWER(10, 400) > 0", False),
    # a condition that is not exactly true does not match
    ("$body.Weather.Temperature", False),
    ("'true'", False),
    ("1", False),
    ("null", False),
]


@pytest.mark.parametrize(("text", "expected"), UNDEFINED_CASES)
def test_undefined_semantics(text: str, expected: bool) -> None:
    check(text, expected)


WIRE = [
    ("severity = 5", True),
    ("severity = 5.0", True),
    ("severity > 4", True),
    ("severity = '5'", True),
    ("severity = 6", False),
    ("5 = severity", True),
    ("severity + 1 = 6", True),
    ("ratio * 2 = 5", True),
    ("verbose = true", True),
    ("verbose", True),
    ("NOT verbose", False),
    ("verbose AND severity >= 5", True),
    ("processingPath = 5", False),
    ("severity IN [1, 5]", True),
    ("severity = $body.Weather.HistoricalData[1].Temperature / 6", True),
    ("severity = ratio", False),  # both strings: compared as strings
]


@pytest.mark.parametrize(("text", "expected"), WIRE)
def test_property_strings_read_as_numbers_and_booleans(text: str, expected: bool) -> None:
    check(text, expected)


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        ("5", True),
        (" 5 ", True),
        ("5.0", True),
        ("+5", True),
        ("5e0", True),
        ("0x5", False),
        ("five", False),
        ("", False),
    ],
)
def test_numeric_looking_property(value: str, matches: bool) -> None:
    check("severity = 5", matches, RoutingMessage({"severity": value}, {}, b""))


SYSTEM_CASES = [
    ("$connectionDeviceId = 'dev1'", True),
    ("$connectionModuleId = 'tempSensor'", True),
    ("$ConnectionModuleId = 'tempSensor'", True),
    ("$iothub-connection-module-id = 'tempSensor'", True),
    ("$contentType = 'application/json'", True),
    ("$messageId = 'm-1'", True),
    ("IS_DEFINED($correlationId)", False),
    ("$custom = 'from-app'", True),  # falls back to the application property "$custom"
    ("Processingpath = 'hot'", True),  # names are case-insensitive after an exact miss
]


@pytest.mark.parametrize(("text", "expected"), SYSTEM_CASES)
def test_system_properties(text: str, expected: bool) -> None:
    msg = RoutingMessage({**PROPS, "$custom": "from-app"}, SYSTEM, json.dumps(WEATHER).encode())
    check(text, expected, msg)


@pytest.mark.parametrize(
    ("system", "body", "defined"),
    [
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": 1}', True),
        ({"contentType": "Application/JSON", "contentEncoding": "UTF-8"}, b'{"t": 1}', True),
        ({"contentType": "application/json; charset=utf-8", "contentEncoding": "utf-8"}, b'{"t": 1}', True),
        ({"contentType": "application/json", "contentEncoding": "utf-16"}, '{"t": 1}'.encode("utf-16"), True),
        ({"contentType": "application/json", "contentEncoding": "UTF-32"}, '{"t": 1}'.encode("utf-32"), True),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'\xef\xbb\xbf{"t": 1}', True),
        ({"contentType": "text/plain", "contentEncoding": "utf-8"}, b'{"t": 1}', False),
        ({"contentType": "application/json"}, b'{"t": 1}', False),
        ({"contentEncoding": "utf-8"}, b'{"t": 1}', False),
        ({"contentType": "application/json", "contentEncoding": "latin-1"}, b'{"t": 1}', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": ', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b'{"t": NaN}', False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b"\xff\xfe", False),
        ({"contentType": "application/json", "contentEncoding": "utf-8"}, b"[1, 2]", False),
        ({}, b"", False),
    ],
)
def test_body_needs_json_content_type_and_utf_encoding(system: dict[str, str], body: bytes, defined: bool) -> None:
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
    assert compile_condition("IS_DEFINED($body.x)")(message(raw=deep)) is False


def test_condition_object() -> None:
    condition = compile_condition("severity = 'high'")
    assert isinstance(condition, Condition)
    assert condition.text == "severity = 'high'"
    assert condition == compile_condition("severity = 'high'")
    assert hash(condition) == hash(compile_condition("severity = 'high'"))
    assert condition != compile_condition("severity = 'low'")
    assert "severity" in repr(condition)
    assert condition.evaluate(message(properties={"severity": "high"})) is True


def test_keywords_are_case_insensitive() -> None:
    check("TRUE and NOT False Or null", True)
    check("severity NoT In [1] AND nUlL = NULL", True)


def test_names_may_contain_hyphens_and_dots_like_azure() -> None:
    props = {"x-y": "1", "a.b": "2", "x": "10", "y": "3"}
    msg = RoutingMessage(props, {}, b"")
    check("x-y = 1", True, msg)
    check("a.b = 2", True, msg)
    check("x - y = 7", True, msg)


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


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("temperature >", 1, 14, "expected an expression after '>'"),
        ("x = 'abc", 1, 5, "unterminated string literal"),
        ('x = "abc', 1, 5, "unterminated string literal"),
        ("FOO(1) = 2", 1, 1, "unknown function 'FOO'; known: ABS, AS_NUMBER"),
        ("a = 1 AND length(a, b) = 1", 1, 11, "LENGTH takes 1 argument, got 2"),
        ("SUBSTRING(a)", 1, 1, "SUBSTRING takes 2 to 3 arguments, got 1"),
        ("CONCAT('a')", 1, 1, "CONCAT takes at least 2 arguments, got 1"),
        ("POWER(1)", 1, 1, "POWER takes 2 arguments, got 1"),
        ("a = 'x\\n'", 1, 7, "invalid escape '\\\\n'"),
        ("$twin.tags.x = 1", 1, 1, "$twin is not supported"),
        ("$connectionModuleId.x = 1", 1, 1, "has no fields"),
        ("severity[0] = 1", 1, 1, "cannot be indexed"),
        ("a = 1e999", 1, 5, "out of range"),
        ("a ==  1", 1, 4, "expected an expression after '='"),
        ("a = 1 b", 1, 7, "expected an operator, AND, OR or the end of the text, found 'b'"),
        ("(a = 1", 1, 7, "expected ')', found the end of the text"),
        ("a = 1\n  AND\n  b = #", 3, 7, "unexpected character '#'"),
        ("", 1, 1, "expected an expression"),
        ("NOT " * 50 + "true", 1, 165, "nests more than 40 levels"),
    ],
)
def test_errors_have_positions(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_condition(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert fragment in info.value.reason
    assert info.value.text == text
    assert "^" in info.value.caret()


def test_long_chains_are_flattened_not_rejected() -> None:
    text = " OR ".join(f"x = {i}" for i in range(300))
    check(text, True, RoutingMessage({"x": "299"}, {}, b""))


def test_non_text_is_a_query_error() -> None:
    with pytest.raises(QueryError):
        compile_condition(None)  # type: ignore[arg-type]
