"""Gate statistics with known distributions: equal cohorts pass, a 30 % regression fails, too few wait."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from outpost.fleet.errors import InvalidError
from outpost.fleet.rollout.gates import (
    DeviceSample,
    GateSpec,
    Verdict,
    evaluate,
    latency_gate,
    parse_duration,
    parse_gates,
    rate_gate,
)

RNG_SEED = 20261202


def latencies(n: int, scale: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(rng.lognormal(mean=np.log(4.0 * scale), sigma=0.15, size=n))


def test_equal_cohorts_pass() -> None:
    for seed in range(20):
        gate = latency_gate(
            latencies(30, 1.0, seed), latencies(60, 1.0, seed + 1000), limit_pct=10, confidence=0.95, min_devices=3
        )
        assert gate.verdict is Verdict.PASS, gate
        assert gate.test.startswith("Mann-Whitney U")


def test_a_30_percent_latency_regression_fails() -> None:
    for seed in range(20):
        gate = latency_gate(
            latencies(30, 1.3, seed), latencies(60, 1.0, seed + 1000), limit_pct=10, confidence=0.95, min_devices=3
        )
        assert gate.verdict is Verdict.FAIL, gate
        assert gate.value is not None
        assert gate.value > 10
        assert gate.p_value is not None
        assert gate.p_value < 0.05


def test_a_regression_within_the_limit_passes() -> None:
    gate = latency_gate(latencies(40, 1.05, 1), latencies(40, 1.0, 2), limit_pct=20, confidence=0.95, min_devices=3)
    assert gate.verdict is Verdict.PASS


def test_too_few_devices_wait_never_pass() -> None:
    gate = latency_gate([4.0, 4.1], latencies(50, 1.0, 3), limit_pct=10, confidence=0.95, min_devices=3)
    assert gate.verdict is Verdict.WAIT
    assert "need 3" in gate.detail


def test_a_noisy_small_cohort_neither_aborts_nor_promotes() -> None:
    """Three devices a side, 30 % slower but spread: above the limit, not significant, so it waits."""
    control = [3.0, 4.0, 5.0]
    gate = latency_gate([x * 1.3 for x in control], control, limit_pct=10, confidence=0.95, min_devices=3)
    assert gate.verdict is Verdict.WAIT, gate
    assert gate.value == pytest.approx(30, abs=0.01)


def test_one_slow_device_does_not_abort() -> None:
    control = latencies(5, 1.0, 7)
    gate = latency_gate([*control[:4], control[4] * 3], control, limit_pct=10, confidence=0.95, min_devices=3)
    assert gate.verdict is not Verdict.FAIL


def test_rates_fisher_exact() -> None:
    equal = rate_gate("alerts", (50, 1000), (52, 1000), limit=0.02, confidence=0.95, min_trials=100, two_sided=True)
    assert equal.verdict is Verdict.PASS
    assert equal.test.startswith("Fisher's exact, two-sided")
    worse = rate_gate("alerts", (150, 1000), (50, 1000), limit=0.02, confidence=0.95, min_trials=100, two_sided=True)
    assert worse.verdict is Verdict.FAIL
    assert worse.value == pytest.approx(0.1)
    fewer = rate_gate("alerts", (0, 1000), (150, 1000), limit=0.02, confidence=0.95, min_trials=100, two_sided=True)
    assert fewer.verdict is Verdict.FAIL  # a silent model is as suspect as a noisy one
    few = rate_gate("alerts", (5, 10), (0, 10), limit=0.02, confidence=0.95, min_trials=100, two_sided=True)
    assert few.verdict is Verdict.WAIT


def samples(
    prefix: str, n: int, scale: float, *, failed: int = 0, alerts: int = 5, seed: int = 0
) -> list[DeviceSample]:
    lat = latencies(n, scale, zlib.crc32(prefix.encode()) + seed)
    return [
        DeviceSample(f"{prefix}{i}", None if i < failed else lat[i], 200, alerts, 0, load_failed=i < failed)
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(10))
def test_evaluate_passes_a_good_candidate_after_the_soak(seed: int) -> None:
    spec = GateSpec(soak_s=60)
    good = evaluate(spec, samples("t", 20, 1.0, seed=seed), samples("c", 40, 1.0, seed=seed), elapsed_s=61)
    assert good.verdict is Verdict.PASS, good.as_dict()
    assert {g.name for g in good.gates} == {"devices", "soak", "failures", "latency", "alerts", "errors"}
    soaking = evaluate(spec, samples("t", 10, 1.0), samples("c", 30, 1.0), elapsed_s=10)
    assert soaking.verdict is Verdict.WAIT


def test_evaluate_fails_a_model_that_cannot_load_before_the_soak() -> None:
    result = evaluate(GateSpec(soak_s=600), samples("t", 4, 1.0, failed=4), samples("c", 16, 1.0), elapsed_s=5)
    assert result.verdict is Verdict.FAIL
    assert [g.name for g in result.failed] == ["failures"]
    assert result.failed[0].figures["treatment"] == [4, 4]


@pytest.mark.parametrize("seed", range(10))
def test_evaluate_fails_a_slow_candidate_with_the_latency_gate_named(seed: int) -> None:
    result = evaluate(
        GateSpec(soak_s=0), samples("t", 20, 1.3, seed=seed), samples("c", 40, 1.0, seed=seed), elapsed_s=1
    )
    assert [g.name for g in result.failed] == ["latency"]


def test_evaluate_without_devices_waits() -> None:
    result = evaluate(GateSpec(soak_s=0), [], [], elapsed_s=1000)
    assert result.verdict is Verdict.WAIT
    assert not result.failed


def test_parse_gates_and_durations() -> None:
    spec = parse_gates(["latency=20%", "alerts=0.1", "confidence=0.99", "failures=0.2"])
    assert (spec.latency_pct, spec.alerts, spec.confidence, spec.failures) == (20, 0.1, 0.99, 0.2)
    assert GateSpec.from_dict(spec.as_dict()) == spec
    assert [parse_duration(t) for t in ("10m", "30s", "2", "1.5h")] == [600, 30, 2, 5400]
    for bad in [
        "latency",
        "speed=3",
        "alerts=2",
        "confidence=1.5",
        "latency=-1",
        "latency=x",
        "latency=inf",
        "alerts=nan",
    ]:
        with pytest.raises(InvalidError) as info:
            parse_gates([bad])
        assert info.value.problems[0].pointer == "--gate[0]"
    with pytest.raises(InvalidError):
        parse_duration("ten minutes")
