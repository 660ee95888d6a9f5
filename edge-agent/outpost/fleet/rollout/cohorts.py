"""Deterministic, stable cohorts: which devices of a group get a rollout's candidate model.

A device's place is a hash of the rollout's name and its id mapped onto [0, 100): it is in the
treatment cohort of a step of P percent when its place is below P. So a device keeps its cohort
across restarts of anything, growing a step only adds devices, and two rollouts draw independent
cohorts. The share of a small group is only close to P (each device is an independent draw); the
``devices`` gate waits until each cohort has enough reporting devices.
"""

from __future__ import annotations

from collections.abc import Iterable

from outpost.lang.target import cohort_place

__all__ = ["Cohorts", "in_treatment", "place", "split", "treatment_condition"]


def place(rollout: str, device_id: str) -> float:
    """The device's place in [0, 100) for this rollout (what the target function ``OUTPOST_COHORT`` computes)."""
    return cohort_place(rollout, device_id)


def in_treatment(rollout: str, device_id: str, percent: float) -> bool:
    return percent >= 100.0 or place(rollout, device_id) < percent


class Cohorts:
    """A step's split of a group: ``treatment`` and ``control`` device ids, sorted."""

    def __init__(self, treatment: list[str], control: list[str]) -> None:
        self.treatment = treatment
        self.control = control


def split(rollout: str, device_ids: Iterable[str], percent: float) -> Cohorts:
    treatment: list[str] = []
    control: list[str] = []
    for device_id in sorted(set(device_ids)):
        (treatment if in_treatment(rollout, device_id, percent) else control).append(device_id)
    return Cohorts(treatment, control)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def treatment_condition(group: str, rollout: str, percent: float) -> str:
    """The layered deployment's target: the group and the devices whose place is below the step.

    Constant in size whatever the group's size (``OUTPOST_COHORT``, an Outpost extension of target
    conditions, computes :func:`place`), changes only when the step does, and a device that joins
    the group falls into its cohort with no help from the driver.
    """
    return f"({group}) AND OUTPOST_COHORT(deviceId, {_quote(rollout)}) < {float(percent)!r}"
