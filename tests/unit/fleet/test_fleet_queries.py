"""metrics.queries: Azure's SELECT deviceId FROM devices[.modules] WHERE ... shape."""

from __future__ import annotations

import pytest

from outpost.errors import QueryError
from outpost.fleet.queries import compile_query

DEVICES = [
    (
        {"deviceId": "a", "tags": {"site": "x"}, "properties": {"reported": {}}},
        [{"deviceId": "a", "moduleId": "$edgeAgent", "properties": {"reported": {"lastDesiredStatus": {"code": 200}}}}],
    ),
    (
        {"deviceId": "b", "tags": {"site": "y"}, "properties": {"reported": {}}},
        [{"deviceId": "b", "moduleId": "$edgeAgent", "properties": {"reported": {"lastDesiredStatus": {"code": 500}}}}],
    ),
]


def test_modules_query_selects_devices_by_a_module_twin() -> None:
    query = compile_query(
        "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND "
        "properties.reported.lastDesiredStatus.code = 200"
    )
    assert query.devices(DEVICES) == ["a"]


def test_devices_query_reads_the_device_twin_and_where_is_optional() -> None:
    assert compile_query("select deviceId from devices where tags.site = 'y'").devices(DEVICES) == ["b"]
    assert compile_query("SELECT deviceId FROM devices").devices(DEVICES) == ["a", "b"]


def test_an_error_in_the_condition_points_into_the_whole_query() -> None:
    text = "SELECT deviceId FROM devices WHERE tags.site = "
    with pytest.raises(QueryError) as caught:
        compile_query(text)
    assert caught.value.line == 1
    assert caught.value.column > len("SELECT deviceId FROM devices WHERE ")


@pytest.mark.parametrize("text", ["SELECT * FROM devices", "SELECT deviceId FROM modules", "DELETE FROM devices", ""])
def test_other_shapes_are_refused(text: str) -> None:
    with pytest.raises(QueryError, match="expected SELECT deviceId"):
        compile_query(text)
