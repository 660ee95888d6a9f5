"""A rollout's state and its next move, decided from what the group's devices reported.

Pure: :func:`decide` takes the stored :class:`Rollout`, each group device's report of the rolled
module (its reported properties and when it last reported) and the time, and answers a
:class:`Decision` (wait, advance, await approval, roll back, promote) with the new state. The
driver (:mod:`outpost.fleet.rollout.driver`) applies it with the fleet's own deployments.

What counts in a step's window: a device that reported after the step opened and serves its
cohort's model (by sha256). Counters (inferences, alerts, invalid messages) count from the first
report seen in the window (the device's baseline), so stale figures of a device that was offline
never count for a step it missed. A treatment device that reports ``modelError`` while not serving
the candidate is a load failure.

Steps: passing the gates of a step moves to the next; the step that reaches 100 % is promotion
(there is no control cohort left to compare with), so ``5,25,50,100`` gates three times. With
``approve_each_step`` every passed step (the promotion too) waits for an operator's approval;
with ``approve_promotion`` only the promotion does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from outpost.fleet.rollout.cohorts import Cohorts, split
from outpost.fleet.rollout.gates import DeviceSample, Evaluation, GateSpec, Verdict, evaluate

__all__ = [
    "Action",
    "Decision",
    "DeviceReport",
    "Rollout",
    "RolloutState",
    "advance",
    "approved",
    "decide",
    "samples",
    "serves",
]


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting-approval"
    ROLLED_BACK = "rolled-back"
    PROMOTED = "promoted"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in {RolloutState.ROLLED_BACK, RolloutState.PROMOTED, RolloutState.ABORTED}


class Action(enum.StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    AWAIT_APPROVAL = "await-approval"
    ROLLBACK = "rollback"
    PROMOTE = "promote"


@dataclass(frozen=True)
class Rollout:
    """A rollout as stored: what, to whom, where it stands, and what it decided last."""

    name: str
    group: str
    module: str
    model: dict[str, Any]
    """The candidate's desired ``model`` value (version, url, sha256)."""
    control_model: dict[str, Any]
    base_deployment: str
    steps: list[float]
    spec: GateSpec = field(default_factory=GateSpec)
    approve_each_step: bool = False
    """Every passed step, the promotion included, waits for ``outpost rollout approve``."""
    approve_promotion: bool = False
    """Only the promotion waits for ``outpost rollout approve``."""
    step: int = 0
    state: RolloutState = RolloutState.RUNNING
    step_started: float = 0.0
    baselines: dict[str, dict[str, int]] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    version: int = 1
    signatures: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """The operator's over the layer's and the promoted content (``contents.LAYER``/``PROMOTED``)."""

    @property
    def percent(self) -> float:
        return self.steps[self.step]

    @property
    def layer_id(self) -> str:
        return f"rollout-{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "module": self.module,
            "model": self.model,
            "controlModel": self.control_model,
            "baseDeployment": self.base_deployment,
            "steps": list(self.steps),
            "gates": self.spec.as_dict(),
            "approveEachStep": self.approve_each_step,
            "approvePromotion": self.approve_promotion,
            "step": self.step,
            "state": str(self.state),
            "stepStarted": self.step_started,
            "baselines": self.baselines,
            "last": self.last,
            "failure": self.failure,
            "version": self.version,
            **({"signatures": self.signatures} if self.signatures else {}),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Rollout:
        return cls(
            name=doc["name"],
            group=doc["group"],
            module=doc["module"],
            model=dict(doc["model"]),
            control_model=dict(doc["controlModel"]),
            base_deployment=doc["baseDeployment"],
            steps=[float(s) for s in doc["steps"]],
            spec=GateSpec.from_dict(doc["gates"]),
            approve_each_step=bool(doc["approveEachStep"]),
            approve_promotion=bool(doc.get("approvePromotion", False)),
            step=int(doc["step"]),
            state=RolloutState(doc["state"]),
            step_started=float(doc["stepStarted"]),
            baselines={k: dict(v) for k, v in doc["baselines"].items()},
            last=doc.get("last"),
            failure=doc.get("failure"),
            version=int(doc.get("version", 1)),
            signatures={k: list(v) for k, v in (doc.get("signatures") or {}).items()},
        )


@dataclass(frozen=True)
class DeviceReport:
    """One group device: its reported properties of the rolled module, and when it last reported."""

    device_id: str
    reported: Mapping[str, Any]
    last_report: float | None


@dataclass(frozen=True)
class Decision:
    action: Action
    rollout: Rollout
    cohorts: Cohorts
    evaluation: Evaluation | None
    models: dict[str, int]
    """Devices per reported model version (``none`` when not reporting one)."""


def _sha(model: Mapping[str, Any] | None) -> str | None:
    if not isinstance(model, Mapping):
        return None
    sha = model.get("sha256")
    return sha.lower() if isinstance(sha, str) else None


def serves(serving: Any, wanted: Mapping[str, Any]) -> bool:
    """Does the reported ``model`` match the desired one: by sha256 when it names one, else by version."""
    if not isinstance(serving, Mapping):
        return False
    sha = _sha(wanted)
    if sha is not None:
        return _sha(serving) == sha
    return str(serving.get("version")) == str(wanted.get("version"))


def _int(doc: Mapping[str, Any], *path: str) -> int:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _latency(doc: Mapping[str, Any]) -> float | None:
    inference = doc.get("inference")
    value = inference.get("latencyMsP50") if isinstance(inference, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _counters(doc: Mapping[str, Any]) -> dict[str, int]:
    return {
        "inferences": _int(doc, "inference", "count"),
        "alerts": _int(doc, "alerts", "count"),
        "invalid": _int(doc, "invalidMessages"),
    }


def samples(
    rollout: Rollout, reports: Sequence[DeviceReport], cohorts: Cohorts
) -> tuple[list[DeviceSample], list[DeviceSample], dict[str, dict[str, int]], dict[str, int]]:
    """Treatment and control samples of the current window, the baselines, and devices per model."""
    treatment_ids = set(cohorts.treatment)
    baselines = dict(rollout.baselines)
    treatment: list[DeviceSample] = []
    control_samples: list[DeviceSample] = []
    models: dict[str, int] = {}
    for report in reports:
        serving = report.reported.get("model")
        version = str(serving.get("version")) if isinstance(serving, Mapping) else "none"
        models[version] = models.get(version, 0) + 1
        if report.last_report is None or report.last_report < rollout.step_started:
            continue  # stale: nothing reported in this window
        in_treatment = report.device_id in treatment_ids
        if in_treatment and not serves(serving, rollout.model):
            if report.reported.get("modelError"):
                treatment.append(DeviceSample(report.device_id, load_failed=True))
            continue  # still converging
        if not in_treatment and not serves(serving, rollout.control_model):
            continue
        counters = _counters(report.reported)
        base = baselines.setdefault(report.device_id, counters)
        if any(counters[k] < base.get(k, 0) for k in counters):  # the module restarted: count afresh
            base = baselines[report.device_id] = dict.fromkeys(counters, 0)
        sample = DeviceSample(
            report.device_id,
            latency_ms=_latency(report.reported),
            inferences=counters["inferences"] - base["inferences"],
            alerts=counters["alerts"] - base["alerts"],
            invalid=counters["invalid"] - base["invalid"],
        )
        (treatment if in_treatment else control_samples).append(sample)
    return treatment, control_samples, baselines, models


def decide(rollout: Rollout, reports: Sequence[DeviceReport], now: float) -> Decision:
    """The rollout's next move."""
    cohorts = split(rollout.name, [r.device_id for r in reports], rollout.percent)
    if rollout.state is not RolloutState.RUNNING:
        return Decision(Action.WAIT, rollout, cohorts, None, {})
    treatment, control, baselines, models = samples(rollout, reports, cohorts)
    evaluation = evaluate(rollout.spec, treatment, control, now - rollout.step_started)
    last = {"at": now, "step": rollout.step, "percent": rollout.percent, **evaluation.as_dict()}
    current = replace(rollout, baselines=baselines, last=last)
    if evaluation.verdict is Verdict.FAIL:
        failure = {"at": now, "step": rollout.step, "gates": [g.as_dict() for g in evaluation.failed]}
        rolled = replace(current, state=RolloutState.ROLLED_BACK, failure=failure)
        return Decision(Action.ROLLBACK, rolled, cohorts, evaluation, models)
    if evaluation.verdict is Verdict.WAIT:
        return Decision(Action.WAIT, current, cohorts, evaluation, models)
    return _passed(current, cohorts, evaluation, models, now)


def _promotes(rollout: Rollout) -> bool:
    """Is the step after the current one the promotion (100 %, or no step left)?"""
    following = rollout.step + 1
    return following >= len(rollout.steps) or rollout.steps[following] >= 100


def _passed(rollout: Rollout, cohorts: Cohorts, evaluation: Evaluation, models: dict[str, int], now: float) -> Decision:
    promotes = _promotes(rollout)
    if rollout.approve_each_step or (promotes and rollout.approve_promotion):
        waiting = replace(rollout, state=RolloutState.AWAITING_APPROVAL)
        return Decision(Action.AWAIT_APPROVAL, waiting, cohorts, evaluation, models)
    following = approved(rollout, now)
    return Decision(Action.PROMOTE if promotes else Action.ADVANCE, following, cohorts, evaluation, models)


def approved(rollout: Rollout, now: float) -> Rollout:
    """What a passed (or approved) step leads to: the next step, or the promotion."""
    if _promotes(rollout):
        return replace(rollout, state=RolloutState.PROMOTED, step=len(rollout.steps) - 1)
    return advance(rollout, now)


def advance(rollout: Rollout, now: float) -> Rollout:
    """The next step, with a fresh window."""
    return replace(rollout, step=rollout.step + 1, step_started=now, baselines={}, state=RolloutState.RUNNING)
