"""The one backoff type: capped doubling, jitter within bounds, retries stamped by a given clock."""

from __future__ import annotations

import pytest

from outpost.backoff import Backoff, Retry


def test_doubles_from_first_and_stops_at_the_cap() -> None:
    shape = Backoff(first=0.1, cap=1.0)
    assert [shape.delay(n) for n in range(7)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert shape.delay(10_000) == 1.0  # no overflow


def test_jitter_takes_off_at_most_its_fraction() -> None:
    shape = Backoff(first=10.0, cap=100.0, jitter=0.2)
    assert shape.delay(1, rand=lambda: 0.0) == 10.0
    assert shape.delay(1, rand=lambda: 0.999999) == pytest.approx(8.0, abs=1e-4)
    assert all(8.0 <= shape.delay(1) <= 10.0 for _ in range(100))


@pytest.mark.parametrize("kw", [{"first": -1.0}, {"cap": -1.0}, {"factor": 0.5}, {"jitter": 1.5}])
def test_refuses_a_shape_that_makes_no_sense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(**{"first": 1.0, "cap": 2.0, **kw})


def test_retry_is_due_after_its_wait_and_a_permanent_one_never() -> None:
    shape = Backoff(first=1.0, cap=4.0)
    retry = Retry().failed(shape, 100.0).failed(shape, 101.0)
    assert retry == Retry(failures=2, due_at=103.0)
    assert not retry.due(102.9)
    assert retry.due(103.0)
    assert retry.wait(102.0) == 1.0
    stuck = retry.failed(shape, 104.0, permanent=True)
    assert stuck.failures == 3
    assert not stuck.due(1e12)
    assert stuck.wait(0.0) is None
