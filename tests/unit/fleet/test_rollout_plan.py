"""The rollout's next move from simulated reports (pure; the gates' statistics are tested on their own)."""

from __future__ import annotations

import numpy as np

from outpost.fleet.rollout.cohorts import split
from outpost.fleet.rollout.gates import GateSpec
from outpost.fleet.rollout.plan import Action, DeviceReport, Rollout, RolloutState, decide

V1 = {"version": "1", "sha256": "a" * 64}
V2 = {"version": "2", "url": "http://127.0.0.1:1/m", "sha256": "b" * 64}
DEVICES = [f"dev-{i:02d}" for i in range(40)]


def rollout(**changes: object) -> Rollout:
    base = Rollout(
        name="motor-v2",
        group="tags.site = 'north'",
        module="anomaly-detector",
        model=V2,
        control_model=V1,
        base_deployment="base",
        steps=[25, 50, 100],
        spec=GateSpec(soak_s=60, min_inferences=100),
        step_started=1000.0,
    )
    return Rollout.from_dict({**base.to_dict(), **changes})


def report(device: str, model: dict[str, str] | None, *, latency: float, count: int, at: float = 1010.0,
           error: str | None = None) -> DeviceReport:  # fmt: skip
    return DeviceReport(
        device,
        {
            "model": None if model is None else {"version": model["version"], "sha256": model["sha256"]},
            "modelError": error,
            "inference": {"count": count, "latencyMsP50": latency},
            "alerts": {"count": count // 20},
            "invalidMessages": 0,
        },
        at,
    )


def reports(r: Rollout, *, slow: float = 1.0, count: int, at: float, broken: bool = False) -> list[DeviceReport]:
    treatment = set(split(r.name, DEVICES, r.percent).treatment)
    rng = np.random.default_rng(len(DEVICES) + count)
    out = []
    for device in DEVICES:
        lat = float(rng.normal(4.0, 0.2))
        if device in treatment and broken:
            out.append(report(device, V1, latency=lat, count=count, at=at, error="model: not a TFLite file"))
        elif device in treatment:
            out.append(report(device, V2, latency=lat * slow, count=count, at=at))
        else:
            out.append(report(device, V1, latency=lat, count=count, at=at))
    return out


def test_a_good_candidate_waits_for_the_soak_then_advances_then_promotes() -> None:
    r = rollout()
    first = decide(r, reports(r, count=100, at=1010), now=1010)
    assert first.action is Action.WAIT
    assert first.models == {"1": len(first.cohorts.control), "2": len(first.cohorts.treatment)}
    second = decide(first.rollout, reports(r, count=400, at=1070), now=1070)
    assert second.action is Action.ADVANCE, second.evaluation and second.evaluation.as_dict()
    assert second.rollout.step == 1
    assert second.rollout.baselines == {}
    r2 = second.rollout
    assert set(split(r.name, DEVICES, 25).treatment) <= set(split(r.name, DEVICES, r2.percent).treatment)
    third = decide(r2, reports(r2, count=500, at=1080), now=1080)
    fourth = decide(third.rollout, reports(r2, count=900, at=1140), now=1140)
    assert fourth.action is Action.PROMOTE
    assert fourth.rollout.state is RolloutState.PROMOTED


def test_a_slow_candidate_rolls_back_with_the_latency_gate_named() -> None:
    r = rollout()
    first = decide(r, reports(r, slow=1.4, count=100, at=1010), now=1010)
    second = decide(first.rollout, reports(r, slow=1.4, count=400, at=1070), now=1070)
    assert second.action is Action.ROLLBACK
    assert second.rollout.state is RolloutState.ROLLED_BACK
    assert second.rollout.failure is not None
    assert [g["gate"] for g in second.rollout.failure["gates"]] == ["latency"]


def test_a_model_that_cannot_load_rolls_back_at_once() -> None:
    r = rollout()
    decision = decide(r, reports(r, count=100, at=1010, broken=True), now=1010)
    assert decision.action is Action.ROLLBACK
    assert decision.rollout.failure is not None
    assert [g["gate"] for g in decision.rollout.failure["gates"]] == ["failures"]


def test_stale_reports_do_not_count() -> None:
    r = rollout()
    decision = decide(r, reports(r, count=100, at=900), now=2000)
    assert decision.action is Action.WAIT
    assert decision.evaluation is not None
    assert decision.evaluation.gates[0].detail.startswith("0 treatment / 0 control")


def test_approve_each_step_waits_for_an_operator() -> None:
    r = rollout(approveEachStep=True)
    first = decide(r, reports(r, count=100, at=1010), now=1010)
    second = decide(first.rollout, reports(r, count=400, at=1070), now=1070)
    assert second.action is Action.AWAIT_APPROVAL
    assert decide(second.rollout, reports(r, count=800, at=1200), now=1200).action is Action.WAIT


def test_a_stored_rollout_round_trips() -> None:
    r = rollout(step=1, state="paused", baselines={"d": {"inferences": 3, "alerts": 0, "invalid": 0}})
    assert Rollout.from_dict(r.to_dict()) == r
