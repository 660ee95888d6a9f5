"""Cohorts are deterministic, stable, independent per rollout, and only grow."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outpost.errors import QueryError
from outpost.fleet.resolution import target
from outpost.fleet.rollout.cohorts import in_treatment, place, split, treatment_condition
from outpost.lang.condition import compile_condition

DEVICES = [f"dev-{i:04d}" for i in range(2000)]


def test_places_are_deterministic_and_uniform() -> None:
    assert place("r1", "dev-0001") == place("r1", "dev-0001")
    assert 0 <= place("r1", "dev-0001") < 100
    share = len(split("r1", DEVICES, 25).treatment) / len(DEVICES)
    assert 0.21 < share < 0.29


def test_rollouts_draw_independent_cohorts() -> None:
    a = set(split("motor-v2", DEVICES, 50).treatment)
    b = set(split("motor-v3", DEVICES, 50).treatment)
    assert 0.4 < len(a & b) / len(a) < 0.6


@given(
    st.text(min_size=1, max_size=20),
    st.lists(st.text(min_size=1, max_size=12), max_size=40),
    st.lists(st.floats(0, 100), min_size=2, max_size=5),
)
def test_growing_a_step_only_adds_devices(rollout: str, devices: list[str], steps: list[float]) -> None:
    steps = sorted(steps)
    cohorts = [split(rollout, devices, p) for p in steps]
    for smaller, larger in itertools.pairwise(cohorts):
        assert set(smaller.treatment) <= set(larger.treatment)
        assert set(larger.control) <= set(smaller.control)
    for c in cohorts:
        assert sorted(c.treatment + c.control) == sorted(set(devices))
    assert all(in_treatment(rollout, d, 100) for d in devices)


def test_the_treatment_condition_selects_exactly_the_cohort_in_the_group_in_constant_space() -> None:
    for percent in (0.5, 30.0, 100.0 / 3):
        cohorts = split("r", DEVICES, percent)
        text = treatment_condition("tags.site = 'north'", "r", percent)
        assert len(text) < 80  # no device list, whatever the group's size
        condition = target(text)
        for device in DEVICES:
            assert condition({"deviceId": device, "tags": {"site": "north"}}) == (device in cohorts.treatment)
            assert not condition({"deviceId": device, "tags": {"site": "south"}})


def test_outpost_cohort_is_a_target_extension_only_and_checks_its_arguments() -> None:
    assert target("OUTPOST_COHORT(deviceId, 'r') >= 0")({"deviceId": "d"})
    assert not target("OUTPOST_COHORT(tags.missing, 'r') >= 0")({"deviceId": "d", "tags": {}})  # undefined
    with pytest.raises(QueryError, match="OUTPOST_COHORT takes 2 arguments"):
        target("OUTPOST_COHORT(deviceId) < 5")
    with pytest.raises(QueryError, match="unknown function 'OUTPOST_COHORT'"):
        compile_condition("OUTPOST_COHORT($connectionDeviceId, 'r') < 5")  # routes stay edgeHub's language
