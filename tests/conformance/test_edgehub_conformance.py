"""Outpost against edgeHub's own routing tests, case by case (data in ``edgehub/*.json``).

The cases are the expectations of Azure/iotedge's ConditionCompilerTest, BodyQueryTest,
BodyQueryI18NTest, ConditionVisitorTest and RouteFactoryTest (each case names its file,
test and line). A case agrees when Outpost gives edgeHub's answer: the same compile error,
the same true / false / undefined, the same route accepted or refused. A case marked
``"outpost": {"deviation": NAME}`` is one edgeHub refuses and Outpost accepts through the
documented extension NAME (docs/languages.md): it passes only if Outpost reports that
extension. ``"outpost": {"differs": REASON}`` marks a known difference (a strict xfail).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import QueryError
from outpost.lang import UNDEFINED, ModuleInputSink, RoutingMessage, UpstreamSink, compile_condition, parse_route
from outpost.lang.condition import expression_value

DATA = Path(__file__).parent / "edgehub"
CONDITION_FILES = ("condition_compiler.json", "body_query.json", "body_query_i18n.json")
EXPECTED = {"true": True, "false": False, "undefined": UNDEFINED}


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return loaded


def _message(spec: dict[str, Any]) -> RoutingMessage:
    return RoutingMessage(spec["properties"], spec["system"], spec["body"].encode("utf-8"))


def _params(name: str) -> list[Any]:
    data = _load(name)
    params = []
    for case in data["cases"]:
        source = case["source"]
        text = case.get("condition", case.get("expression", case.get("route", "")))
        ident = f"{source['test']}:{source['line']}:{text[:60]}"
        marks = []
        differs = case.get("outpost", {}).get("differs")
        if differs:
            marks.append(pytest.mark.xfail(reason=differs, strict=True))
        params.append(pytest.param(data.get("message"), case, id=ident, marks=marks))
    return params


def _deviation(case: dict[str, Any]) -> str | None:
    deviation: str | None = case.get("outpost", {}).get("deviation")
    return deviation


def _check_refused_or_deviation(case: dict[str, Any], compile_it: Any) -> None:
    deviation = _deviation(case)
    if deviation is None:
        with pytest.raises(QueryError):
            compile_it()
        return
    compiled = compile_it()
    names = {note.deviation for note in compiled.deviations}
    assert deviation in names, f"accepted without naming the extension {deviation!r}: {compiled.notes}"


@pytest.mark.parametrize(("message", "case"), [p for name in CONDITION_FILES for p in _params(name)])
def test_condition(message: dict[str, Any], case: dict[str, Any]) -> None:
    text, expect = case["condition"], case["expect"]
    if case.get("flags") == "None":
        pytest.skip("edgeHub runs with body queries enabled (RouteCompilerFlags.All); so does Outpost, always")
    if expect == "error":
        _check_refused_or_deviation(case, lambda: compile_condition(text))
        return
    if expect == "true-or-error":
        try:
            compile_condition(text)
        except QueryError:
            return
    condition = compile_condition(text)
    assert condition.deviations == (), f"an edgeHub-valid condition used an extension: {condition.notes}"
    result = condition.value(_message(message))
    unguarded = compile_condition(text, guard=False).value(_message(message))  # no helper may raise
    assert unguarded is result
    if expect == "evaluates":
        assert result in (True, False, UNDEFINED)
    elif expect == "true-or-error":
        assert result is True
    else:
        assert result is EXPECTED[expect], f"{text!r}: edgeHub {expect}, Outpost {result!r}"


@pytest.mark.parametrize(("message", "case"), _params("condition_visitor.json"))
def test_expression(message: None, case: dict[str, Any]) -> None:
    text = case["expression"]
    if case["expect"] == "error":
        with pytest.raises(QueryError):
            compile_condition(text)
        return
    value = expression_value(text, RoutingMessage({}, {}, b""))
    wanted = case["value"]
    if isinstance(wanted, str) and wanted in ("Infinity", "-Infinity", "NaN") and isinstance(value, float):
        assert str(value) == {"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}[wanted]
    elif isinstance(wanted, float):
        assert isinstance(value, float)
        assert value == wanted or math.isclose(value, wanted, rel_tol=0, abs_tol=1e-15), (value, wanted)
    else:
        assert value == wanted


def _edgehub_prefix(source: str) -> str:
    """CustomMessageSource.Create then BaseMessageSource: trailing '*' and '/' off, one '/' on."""
    trimmed = source.strip().rstrip("*")
    trimmed = trimmed.rstrip("/") if len(trimmed) > 1 else trimmed
    return (trimmed.rstrip("/") + "/").lower()


@pytest.mark.parametrize(("message", "case"), _params("route_factory.json"))
def test_route(message: None, case: dict[str, Any]) -> None:
    text = case["route"]
    if case["expect"] == "error":
        _check_refused_or_deviation(case, lambda: parse_route(text))
        return
    route = parse_route(text)
    deviation = _deviation(case)  # edgeHub parses these routes, then refuses their condition
    assert {note.deviation for note in route.deviations} == ({deviation} if deviation else set())
    assert route.source.prefix == _edgehub_prefix(case["message_source"])
    assert (route.condition.text if route.condition else "true") == case["condition"]
    endpoint = case["endpoint"]
    if "system" in endpoint:
        assert isinstance(route.sink, UpstreamSink)
    else:
        address = endpoint["address"].strip().strip("/").split("/")
        assert route.sink == ModuleInputSink(address[1], address[3])


def test_every_case_is_here() -> None:
    """The data keeps all the cases it was made with (1,243 of them)."""
    counts = {name.name: len(_load(name.name)["cases"]) for name in DATA.glob("*.json")}
    assert counts == {
        "condition_compiler.json": 1078,
        "body_query.json": 87,
        "body_query_i18n.json": 4,
        "condition_visitor.json": 34,
        "route_factory.json": 40,
    }
