"""Target conditions: twin queries selecting the devices of an automatic deployment."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.errors import QueryError
from outpost.lang import TargetCondition, compile_target

TWIN: dict[str, Any] = {
    "deviceId": "edge-01",
    "moduleId": "$edgeAgent",
    "tags": {"environment": "test", "building": "43", "floor": 1, "roles": ["gateway"], "x-y": "z"},
    "properties": {
        "reported": {"devicemodel": "4000x", "batteryLevel": 55, "telemetryConfig": {"status": "success"}},
        "desired": {"telemetryConfig": {"sendFrequency": "5m"}, "$version": 3},
    },
    "capabilities": {"iotEdge": True},
}

CASES = [
    ("*", True),
    ("  *  ", True),
    ("tags.environment = 'test' AND properties.reported.devicemodel = '4000x'", True),
    ("tags.environment='test' and properties.reported.devicemodel='4000x'", True),
    ("tags.environment = 'prod' OR properties.reported.batteryLevel > 50", True),
    ("tags.environment = 'prod' AND properties.reported.batteryLevel > 50", False),
    ("deviceId = 'edge-01'", True),
    ("moduleId = '$edgeAgent'", True),
    ("deviceId IN ['edge-01', 'edge-02']", True),
    ("deviceId NIN ['edge-01', 'edge-02']", False),
    ("deviceId NOT IN ['edge-03']", True),
    ("tags.floor IN [1, 2]", True),
    ("tags.floor = 1", True),
    ("tags.building = 43", False),  # twin values keep their JSON type: "43" is a string
    ("tags.building = '43'", True),
    ("NOT (tags.environment = 'prod')", True),
    ("NOT tags.environment = 'test'", False),
    ("IS_DEFINED(tags.environment)", True),
    ("IS_DEFINED(tags.owner)", False),
    ("NOT IS_DEFINED(tags.owner)", True),
    ("tags.owner = 'me'", False),
    ("tags.owner != 'me'", False),
    ("properties.desired.telemetryConfig.sendFrequency = '5m'", True),
    ("properties.desired.$version = 3", True),
    ("properties.reported.telemetryConfig.status = 'success'", True),
    ("tags.roles[0] = 'gateway'", True),
    ("tags.roles[1] = 'gateway'", False),
    ("capabilities.iotEdge = true", True),
    ("STARTS_WITH(deviceId, 'edge-')", True),
    ("LENGTH(deviceId) = 7", True),
    ("properties.reported.batteryLevel * 2 >= 110", True),
    ("Tags.Environment = 'test'", True),  # names are case-insensitive
    ("TAGS.ENVIRONMENT = 'test' aNd PROPERTIES.REPORTED.DEVICEMODEL = '4000x'", True),
    ("tags.x-y = 'z'", True),
    ("tags.environment = 'test' AND (tags.floor = 2 OR tags.floor = 1)", True),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_target_conditions(text: str, expected: bool) -> None:
    target = compile_target(text)
    assert isinstance(target, TargetCondition)
    assert target(TWIN) is expected
    assert target.text == text


def test_paths_lists_twin_fields_in_order_without_duplicates() -> None:
    target = compile_target(
        "tags.environment = 'test' AND properties.reported.devicemodel = '4000x' "
        "AND (tags.environment != 'x' OR IS_DEFINED(Properties.Desired.a[2].b)) AND deviceId IN ['a']"
    )
    assert target.paths() == (
        "tags.environment",
        "properties.reported.devicemodel",
        "properties.desired.a[2].b",
        "deviceId",
    )
    assert compile_target("*").paths() == ()
    assert compile_target("*").matches_all
    assert not target.matches_all


def test_empty_or_odd_twins_do_not_match_and_do_not_raise() -> None:
    target = compile_target("tags.environment = 'test' OR deviceId = 'x' OR properties.reported.a[0] > 1")
    for twin in ({}, {"tags": None}, {"tags": [1]}, {"properties": {"reported": {"a": "s"}}}, None, 5, "twin"):
        assert target(twin) is False  # type: ignore[arg-type]
    assert compile_target("*")({}) is True


def test_target_values() -> None:
    assert compile_target("deviceId = 'a'") == compile_target("deviceId = 'a'")
    assert hash(compile_target("deviceId = 'a'")) == hash(compile_target("deviceId = 'a'"))
    assert "deviceId" in repr(compile_target("deviceId = 'a'"))


ERRORS = [
    ("tag.environment = 'test'", 1, 1, "unknown twin field 'tag'"),
    ("tags.a = 1 AND properties.foo = 1", 1, 16, "expected properties.reported or properties.desired"),
    ("$body.x = 1", 1, 1, "belong to route conditions"),
    ("tags.a = ", 1, 10, "expected an expression after '='"),
    ("* AND tags.a = 1", 1, 3, "expected the end of the text, found AND"),
    ("tags.a IN 'x'", 1, 11, "expected '['"),
    ("tags.a IN [1, 2", 1, 16, "expected ',' or ']', found the end of the text"),
    ("UNKNOWN(tags.a)", 1, 1, "unknown function 'UNKNOWN'"),
    ("", 1, 1, "expected an expression or '*'"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERRORS)
def test_target_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        compile_target(text)
    assert fragment in info.value.reason, info.value.reason
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
