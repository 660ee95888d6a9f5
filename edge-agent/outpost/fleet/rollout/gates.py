"""Rollout gates: is the treatment cohort worse than the control cohort, beyond noise?

Pure statistics over what devices reported during one step's window. Every comparison names its
test and confidence, and each gate answers one of three verdicts:

- ``fail``: the treatment is worse than the limit allows *and* the test says so at the stated
  confidence (a noisy cohort of five devices does not abort by chance);
- ``pass``: enough devices reported, the soak time is over, and the observed figure is within the
  limit (with no significant evidence against it);
- ``wait``: anything else. A gate that lacks data waits; it never passes.

Before the soak time is over only the load-failure gate may fail (a model that cannot be loaded is
not a matter of noise); the others wait, so peeking early does not inflate the false-alarm rate.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from outpost.errors import Problem
from outpost.fleet.errors import InvalidError

__all__ = [
    "DeviceSample",
    "Evaluation",
    "GateResult",
    "GateSpec",
    "Verdict",
    "evaluate",
    "latency_gate",
    "parse_duration",
    "parse_gates",
    "rate_gate",
]


class Verdict(enum.StrEnum):
    PASS = "pass"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class DeviceSample:
    """One device's figures over the step's window (counts are differences since the window opened)."""

    device_id: str
    latency_ms: float | None = None
    inferences: int = 0
    alerts: int = 0
    invalid: int = 0
    load_failed: bool = False


@dataclass(frozen=True)
class GateSpec:
    """The limits of a rollout's gates; ``--gate NAME=VALUE`` sets them (see :func:`parse_gates`)."""

    confidence: float = 0.95
    min_devices: int = 3
    soak_s: float = 600.0
    latency_pct: float = 10.0
    """Inference latency may regress by at most this many percent (Mann-Whitney U over devices)."""
    failures: float = 0.0
    """Fraction of treatment devices that cannot load the model, above the control's."""
    alerts: float = 0.05
    """Absolute difference of alert rates (alerts per inference) in either direction."""
    errors: float = 0.01
    """Invalid messages per message, above the control's."""
    min_inferences: int = 100
    """Inferences per cohort before the rate gates decide."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "minDevices": self.min_devices,
            "soakSeconds": self.soak_s,
            "latencyPct": self.latency_pct,
            "failures": self.failures,
            "alerts": self.alerts,
            "errors": self.errors,
            "minInferences": self.min_inferences,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GateSpec:
        return cls(
            confidence=float(doc["confidence"]),
            min_devices=int(doc["minDevices"]),
            soak_s=float(doc["soakSeconds"]),
            latency_pct=float(doc["latencyPct"]),
            failures=float(doc["failures"]),
            alerts=float(doc["alerts"]),
            errors=float(doc["errors"]),
            min_inferences=int(doc["minInferences"]),
        )


@dataclass(frozen=True)
class GateResult:
    name: str
    verdict: Verdict
    test: str
    value: float | None
    limit: float
    p_value: float | None = None
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.name,
            "verdict": str(self.verdict),
            "test": self.test,
            "value": self.value,
            "limit": self.limit,
            "pValue": self.p_value,
            "detail": self.detail,
            "figures": dict(self.figures),
        }


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    gates: list[GateResult]

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.verdict is Verdict.FAIL]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "gates": [g.as_dict() for g in self.gates]}


def _p(value: Any) -> float:
    number = float(value)
    return 1.0 if math.isnan(number) else number


def latency_gate(
    treatment: Sequence[float], control: Sequence[float], *, limit_pct: float, confidence: float, min_devices: int
) -> GateResult:
    """One-sided Mann-Whitney U of the treatment's per-device latencies against the control's
    inflated by the limit (H1: treatment > control x (1 + limit)). The figure is the regression of
    the cohorts' medians in percent (the shift the test is about); their 95th percentiles are shown
    too. Failing needs both: a figure above the limit and a significant test."""
    name, test = "latency", f"Mann-Whitney U, one-sided, {confidence:.0%} confidence"
    figures: dict[str, Any] = {"treatmentDevices": len(treatment), "controlDevices": len(control)}
    if len(treatment) < min_devices or len(control) < min_devices:
        detail = (
            f"{len(treatment)} treatment / {len(control)} control devices reported latency; need {min_devices} each"
        )
        return GateResult(name, Verdict.WAIT, test, None, limit_pct, None, detail, figures)
    t = np.asarray(treatment, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    med_t, med_c = float(np.median(t)), float(np.median(c))
    regression = (med_t / med_c - 1.0) * 100.0 if med_c > 0 else (0.0 if med_t <= 0 else math.inf)
    figures |= {
        "treatmentMedianMs": round(med_t, 4),
        "controlMedianMs": round(med_c, 4),
        "treatmentP95Ms": round(float(np.percentile(t, 95)), 4),
        "controlP95Ms": round(float(np.percentile(c, 95)), 4),
    }
    p = _p(stats.mannwhitneyu(t, c * (1.0 + limit_pct / 100.0), alternative="greater").pvalue)
    value = round(regression, 2)
    if p < 1.0 - confidence and regression > limit_pct:
        detail = f"latency {value:+.1f} % (limit {limit_pct:g} %), significant (p={p:.3g})"
        return GateResult(name, Verdict.FAIL, test, value, limit_pct, p, detail, figures)
    if regression <= limit_pct:
        detail = f"latency {value:+.1f} % within {limit_pct:g} %"
        return GateResult(name, Verdict.PASS, test, value, limit_pct, p, detail, figures)
    detail = f"latency {value:+.1f} % above {limit_pct:g} % but not significant yet (p={p:.3g})"
    return GateResult(name, Verdict.WAIT, test, value, limit_pct, p, detail, figures)


def rate_gate(
    name: str,
    treatment: tuple[int, int],
    control: tuple[int, int],
    *,
    limit: float,
    confidence: float,
    min_trials: int,
    two_sided: bool = False,
) -> GateResult:
    """Fisher's exact test on (events, trials) of both cohorts. One-sided (H1: the treatment's rate is
    higher) unless ``two_sided``; the figure is the difference of rates (absolute when two-sided)."""
    sided = "two-sided" if two_sided else "one-sided"
    test = f"Fisher's exact, {sided}, {confidence:.0%} confidence"
    (te, tn), (ce, cn) = treatment, control
    figures: dict[str, Any] = {"treatment": [te, tn], "control": [ce, cn]}
    if tn < min_trials or cn < min_trials:
        detail = f"{tn} treatment / {cn} control observations; need {min_trials} each"
        return GateResult(name, Verdict.WAIT, test, None, limit, None, detail, figures)
    te, ce = min(te, tn), min(ce, cn)
    diff = te / tn - ce / cn
    value = abs(diff) if two_sided else diff
    table = np.array([[te, tn - te], [ce, cn - ce]], dtype=np.int64)
    p = _p(stats.fisher_exact(table, alternative="two-sided" if two_sided else "greater").pvalue)
    figures |= {"treatmentRate": round(te / tn, 6), "controlRate": round(ce / cn, 6)}
    shown = round(value, 6)
    if p < 1.0 - confidence and value > limit:
        detail = f"rate difference {shown:g} above {limit:g}, significant (p={p:.3g})"
        return GateResult(name, Verdict.FAIL, test, shown, limit, p, detail, figures)
    if value <= limit:
        return GateResult(
            name, Verdict.PASS, test, shown, limit, p, f"rate difference {shown:g} within {limit:g}", figures
        )
    detail = f"rate difference {shown:g} above {limit:g} but not significant yet (p={p:.3g})"
    return GateResult(name, Verdict.WAIT, test, shown, limit, p, detail, figures)


def evaluate(
    spec: GateSpec, treatment: Sequence[DeviceSample], control: Sequence[DeviceSample], elapsed_s: float
) -> Evaluation:
    """Every gate of one step. ``elapsed_s`` is the time since the step's window opened."""
    results: list[GateResult] = []
    nt, nc = len(treatment), len(control)
    devices_ok = nt >= spec.min_devices and nc >= spec.min_devices
    results.append(
        GateResult(
            "devices",
            Verdict.PASS if devices_ok else Verdict.WAIT,
            "count",
            float(min(nt, nc)),
            float(spec.min_devices),
            detail=f"{nt} treatment / {nc} control devices reporting; need {spec.min_devices} each",
        )
    )
    soaked = elapsed_s >= spec.soak_s
    results.append(
        GateResult(
            "soak",
            Verdict.PASS if soaked else Verdict.WAIT,
            "time",
            round(elapsed_s, 1),
            spec.soak_s,
            detail=f"{elapsed_s:.0f} s of {spec.soak_s:.0f} s",
        )
    )
    failures = rate_gate(
        "failures",
        (sum(s.load_failed for s in treatment), nt),
        (sum(s.load_failed for s in control), nc),
        limit=spec.failures,
        confidence=spec.confidence,
        min_trials=spec.min_devices,
    )
    results.append(failures)
    loaded_t = [s for s in treatment if not s.load_failed]
    latency = latency_gate(
        [s.latency_ms for s in loaded_t if s.latency_ms is not None],
        [s.latency_ms for s in control if s.latency_ms is not None],
        limit_pct=spec.latency_pct,
        confidence=spec.confidence,
        min_devices=spec.min_devices,
    )
    alerts = rate_gate(
        "alerts",
        (sum(s.alerts for s in loaded_t), sum(s.inferences for s in loaded_t)),
        (sum(s.alerts for s in control), sum(s.inferences for s in control)),
        limit=spec.alerts,
        confidence=spec.confidence,
        min_trials=spec.min_inferences,
        two_sided=True,
    )
    errors = rate_gate(
        "errors",
        (sum(s.invalid for s in loaded_t), sum(s.inferences + s.invalid for s in loaded_t)),
        (sum(s.invalid for s in control), sum(s.inferences + s.invalid for s in control)),
        limit=spec.errors,
        confidence=spec.confidence,
        min_trials=spec.min_inferences,
    )
    for gate in (latency, alerts, errors):
        early = not soaked and gate.verdict is not Verdict.WAIT
        results.append(replace(gate, verdict=Verdict.WAIT, detail=f"soaking: {gate.detail}") if early else gate)
    if any(g.verdict is Verdict.FAIL for g in results):
        verdict = Verdict.FAIL
    elif all(g.verdict is Verdict.PASS for g in results):
        verdict = Verdict.PASS
    else:
        verdict = Verdict.WAIT
    return Evaluation(verdict, results)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, pointer: str = "--soak") -> float:
    """``10m``, ``30s``, ``1.5h`` or plain seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise InvalidError(f"invalid duration {text!r}", [Problem(pointer, "expected e.g. 30s, 10m or 1h")])
    return float(match.group(1)) * _SCALE[match.group(2)]


_GATE_HELP = (
    "latency=PCT%, failures=FRACTION, alerts=FRACTION, errors=FRACTION, confidence=0.5..0.999, min-inferences=N"
)


def parse_gates(texts: Iterable[str], base: GateSpec | None = None) -> GateSpec:
    """``--gate NAME=VALUE`` options onto a spec; a bad one is an error naming the option."""
    spec = base or GateSpec()
    for index, text in enumerate(texts):
        pointer = f"--gate[{index}]"
        name, sep, raw = text.partition("=")
        name, raw = name.strip(), raw.strip().removesuffix("%")
        try:
            number = float(raw) if sep else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise InvalidError(f"invalid gate {text!r}", [Problem(pointer, f"expected NAME=VALUE: {_GATE_HELP}")])
        if name == "latency":
            spec = replace(spec, latency_pct=number)
        elif name in {"failures", "alerts", "errors"}:
            if number > 1:
                raise InvalidError(f"invalid gate {text!r}", [Problem(pointer, f"{name} is a fraction in 0..1")])
            spec = GateSpec.from_dict({**spec.as_dict(), name: number})
        elif name == "confidence":
            if not 0.5 <= number < 1:
                raise InvalidError(f"invalid gate {text!r}", [Problem(pointer, "confidence is in 0.5..0.999")])
            spec = replace(spec, confidence=number)
        elif name == "min-inferences":
            spec = replace(spec, min_inferences=int(number))
        else:
            raise InvalidError(f"unknown gate {name!r}", [Problem(pointer, f"known gates: {_GATE_HELP}")])
    return spec
