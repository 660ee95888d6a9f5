"""Rollouts over the fleet's own deployments: start, drive, and the operator's controls.

A rollout is a layered deployment ``rollout-NAME`` that sets the module's desired ``model`` for
the treatment cohort (its target is the group AND the treatment devices by id), so it shows in
``outpost deploy list`` and needs nothing new on a device. Each :meth:`RolloutDriver.tick`
(under a lease in the database: one driver at a time over a shared PostgreSQL) decides every
running rollout's next move from the devices' reported properties (:func:`~.plan.decide`),
stores it (compare-and-set), and then makes the deployments match the stored state:

- running, paused, awaiting approval: the layer exists and targets the current cohort;
- rolled back or aborted: the layer is gone, so the treatment devices return to the base's model;
- promoted: a copy of the base deployment with the candidate model (``BASE+NAME``, same target and
  priority) replaces the base, and the layer is gone.

Matching the stored state, rather than replaying actions, makes a tick idempotent: a fleet
restarted between storing and applying finishes the job on its next tick.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from outpost.errors import Problem, QueryError, StoreError
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, FleetError, InvalidError, NotFoundError
from outpost.fleet.models import DeploymentRecord, DeviceStatus
from outpost.fleet.resolution import target
from outpost.fleet.rollout.cohorts import split, treatment_condition
from outpost.fleet.rollout.contents import LAYER, PROMOTED, candidate_model, layer_content, promoted_content
from outpost.fleet.rollout.gates import parse_duration, parse_gates
from outpost.fleet.rollout.plan import Decision, DeviceReport, Rollout, RolloutState, approved, decide, samples
from outpost.fleet.rollout.registry import ModelRegistry, parse_ref
from outpost.fleet.rollout.store import RolloutStore
from outpost.fleet.service import DEPLOYMENT_ID, FleetService, PushRequest
from outpost.fleet.twins import device_twin
from outpost.trust.signing import Signature

__all__ = ["LEASE", "RolloutDriver", "StartRequest"]

log = logging.getLogger(__name__)
LEASE = "rollout-driver"
LAYER_PRIORITY = 1000
_RETRIES = 20


@dataclass(frozen=True)
class StartRequest:
    name: str
    target: str
    module: str
    model: str
    steps: Sequence[float] = (5, 25, 50, 100)
    soak: str | None = None
    min_devices: int | None = None
    gates: Sequence[str] = field(default_factory=list)
    approve_each_step: bool = False
    approve_promotion: bool = False
    signatures: Mapping[str, Any] | None = None
    """The operator's over every content the rollout can push (``rollout start --sign-key``):
    ``{"baseDeployment": ID, "layer": [SIG], "promoted": [SIG]}``."""


def _signatures(given: Mapping[str, Any] | None, base: DeploymentRecord) -> dict[str, list[dict[str, str]]]:
    """The start's signatures, well-formed and made over this base; refused when the base is signed and
    the rollout is not (devices with a trust root would refuse every step)."""
    if given is None:
        if base.signatures:
            raise InvalidError(
                f"base deployment {base.id!r} is signed: devices with a trust root would refuse this rollout's "
                "unsigned deployments; start it with `outpost rollout start ... --sign-key OPERATOR.key`",
                [Problem("/signatures", "required when the base deployment is signed")],
            )
        return {}
    if not isinstance(given, Mapping):
        raise InvalidError("signatures must be an object", [Problem("/signatures", "expected an object")])
    if given.get("baseDeployment") != base.id:
        raise InvalidError(
            f"the signatures were made over base deployment {given.get('baseDeployment')!r}, but the rollout "
            f"would promote into {base.id!r}; start it again (the CLI signs the current base)",
            [Problem("/signatures/baseDeployment", f"expected {base.id!r}")],
        )
    found: dict[str, list[dict[str, str]]] = {}
    for kind in (LAYER, PROMOTED):
        entries = given.get(kind)
        if not isinstance(entries, list) or not entries:
            raise InvalidError(
                f"signatures for the {kind} content are missing",
                [Problem(f"/signatures/{kind}", "a non-empty list of signatures")],
            )
        try:
            found[kind] = [Signature.from_json(e).to_json() for e in entries]
        except ValueError as exc:
            raise InvalidError("a signature is malformed", [Problem(f"/signatures/{kind}", str(exc))]) from exc
    return found


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _desired(record: DeploymentRecord, module: str) -> dict[str, Any] | None:
    desired = record.content.get(module, {}).get("properties.desired")
    return desired if isinstance(desired, dict) else None


class RolloutDriver:
    """Rollouts of one fleet database. ``models_url`` is the fleet's URL as devices reach it."""

    def __init__(
        self,
        service: FleetService,
        store: RolloutStore,
        *,
        models_url: str,
        holder: str,
        clock: Callable[[], float] = time.time,
        lease_s: float = 15.0,
    ) -> None:
        self.service = service
        self.store = store
        self.registry = ModelRegistry(store)
        self.models_url = models_url.rstrip("/")
        self.holder = holder
        self.clock = clock
        self.lease_s = lease_s
        self.leading = False
        self.on_round: Callable[[bool, list[Decision]], None] = lambda _leading, _decisions: None

    # -- operator calls ---------------------------------------------------------------------

    def start(self, who: Principal, request: StartRequest, *, dry_run: bool = False) -> Rollout:
        """Check and start a rollout; ``dry_run`` checks and answers it without storing anything (the CLI
        reads the base deployment and the candidate from it to sign the contents the rollout will push)."""
        who.require_operator()
        layer_id = f"rollout-{request.name}"
        if not DEPLOYMENT_ID.fullmatch(layer_id) or "+" in request.name:
            raise InvalidError(
                f"invalid rollout name {request.name!r}",
                [
                    Problem(
                        "NAME", "1-119 lowercase letters, digits or - _ (it names the layer deployment rollout-NAME)"
                    )
                ],
            )
        try:
            target(request.target)
        except QueryError as exc:
            raise InvalidError(
                f"invalid target condition {request.target!r}",
                [Problem("--target", f"line {exc.line}, column {exc.column}: {exc.reason}")],
            ) from exc
        steps = [float(s) for s in request.steps]
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise InvalidError(
                f"invalid steps {request.steps!r}",
                [Problem("--steps", "increasing percentages in (0, 100], e.g. 5,25,50,100")],
            )
        spec = parse_gates(request.gates)
        if request.soak is not None:
            spec = replace(spec, soak_s=parse_duration(request.soak))
        if request.min_devices is not None:
            if request.min_devices < 1:
                raise InvalidError("--min-devices must be at least 1", [Problem("--min-devices", "expected >= 1")])
            spec = replace(spec, min_devices=request.min_devices)
        name, version = parse_ref(request.model)
        model = self.registry.model(who, name, version)
        base = self._base(request.module, request.target)
        desired = _desired(base, request.module) or {}
        control = desired.get("model")
        if not isinstance(control, Mapping):
            raise InvalidError(
                f"base deployment {base.id!r} sets no desired model for {request.module!r}",
                [Problem("--module", "the base deployment must set properties.desired.model")],
            )
        if self.service.store.deployment(layer_id) is not None or self.store.rollout(request.name) is not None:
            raise ConflictError(f"rollout {request.name!r} exists (or a deployment {layer_id!r}); choose another name")
        self._refuse_overlap(request, base)
        signatures = {} if dry_run and request.signatures is None else _signatures(request.signatures, base)
        candidate = candidate_model(self.models_url, model.name, model.version, model.sha256, model.metadata)
        rollout = Rollout(
            name=request.name,
            group=request.target,
            module=request.module,
            model=candidate,
            control_model=dict(control),
            base_deployment=base.id,
            steps=steps,
            spec=spec,
            approve_each_step=request.approve_each_step,
            approve_promotion=request.approve_promotion,
            step_started=self.clock(),
            signatures=signatures,
        )
        if dry_run:
            return rollout
        if not self.store.add_rollout(rollout.to_dict()):
            raise ConflictError(f"rollout {request.name!r} exists; choose another name")
        self._reconcile(rollout)
        return rollout

    def _refuse_overlap(self, request: StartRequest, base: DeploymentRecord) -> None:
        """One active rollout per module and devices: two would fight over the same desired model,
        and a promotion replaces the base deployment that the other compares against."""
        mine = target(request.target)
        twins = [device_twin(d) for d in self.service.store.devices()]
        for doc in self.store.rollouts():
            other = Rollout.from_dict(doc)
            if other.state.finished or other.module != request.module:
                continue
            theirs = target(other.group)
            shared = sum(1 for t in twins if mine(t) and theirs(t))
            why = (
                f"{shared} device(s) are in both groups"
                if shared
                else "it promotes into the same base deployment" if other.base_deployment == base.id
                else "the groups are the same" if other.group.strip() == request.target.strip()
                else None
            )  # fmt: skip
            if why is not None:
                raise ConflictError(
                    f"rollout {other.name!r} is {other.state} on module {request.module!r} and {why}; "
                    f"let it finish or `outpost rollout abort {other.name}` first",
                    [Problem("--target", f"overlaps rollout {other.name!r}")],
                )

    def _base(self, module: str, group: str) -> DeploymentRecord:
        """The base deployment that runs ``module``: highest priority, then newest."""

        def runs(d: DeploymentRecord) -> bool:
            return module in d.content.get("$edgeAgent", {}).get("properties.desired", {}).get("modules", {})

        candidates = [d for d in self.service.store.deployments() if not d.layered and runs(d)]
        if not candidates:
            raise InvalidError(
                f"no base deployment runs module {module!r}",
                [Problem("--module", "push a deployment that runs it first")],
            )
        del group  # the group is the rollout's; the base may target more devices
        return max(candidates, key=lambda d: (d.priority, d.seq))

    def rollout(self, who: Principal, name: str) -> Rollout:
        who.require_operator()
        doc = self.store.rollout(name)
        if doc is None:
            raise NotFoundError(f"no rollout {name!r}; `outpost rollout list` shows them")
        return Rollout.from_dict(doc)

    def rollouts(self, who: Principal) -> list[Rollout]:
        who.require_operator()
        return [Rollout.from_dict(d) for d in self.store.rollouts()]

    def _transition(self, who: Principal, name: str, change: Callable[[Rollout], Rollout]) -> Rollout:
        for _ in range(_RETRIES):
            current = self.rollout(who, name)
            new = replace(change(current), version=current.version + 1)
            if self.store.write_rollout(new.to_dict(), current.version):
                self._reconcile(new)
                return new
        raise ConflictError(f"rollout {name!r}: too many concurrent writers; try again")

    def pause(self, who: Principal, name: str) -> Rollout:
        def change(r: Rollout) -> Rollout:
            if r.state is not RolloutState.RUNNING:
                raise ConflictError(f"rollout {name!r} is {r.state}, not running")
            return replace(r, state=RolloutState.PAUSED)

        return self._transition(who, name, change)

    def resume(self, who: Principal, name: str) -> Rollout:
        def change(r: Rollout) -> Rollout:
            if r.state is not RolloutState.PAUSED:
                raise ConflictError(f"rollout {name!r} is {r.state}, not paused")
            return replace(r, state=RolloutState.RUNNING, step_started=self.clock(), baselines={})

        return self._transition(who, name, change)

    def abort(self, who: Principal, name: str) -> Rollout:
        def change(r: Rollout) -> Rollout:
            if r.state.finished:
                raise ConflictError(f"rollout {name!r} is {r.state} already")
            return replace(r, state=RolloutState.ABORTED, failure={"at": self.clock(), "abortedBy": who.name})

        return self._transition(who, name, change)

    def approve(self, who: Principal, name: str) -> Rollout:
        def change(r: Rollout) -> Rollout:
            if r.state is not RolloutState.AWAITING_APPROVAL:
                raise ConflictError(f"rollout {name!r} is {r.state}; only a step awaiting approval can be approved")
            return approved(r, self.clock())

        return self._transition(who, name, change)

    def status(self, who: Principal, name: str) -> dict[str, Any]:
        """Step, cohorts, devices per model and every gate's last value against its limit."""
        rollout = self.rollout(who, name)
        reports = self._reports(rollout)
        cohorts = split(rollout.name, [r.device_id for r in reports], rollout.percent)
        _, _, _, models = samples(rollout, reports, cohorts)
        doc = rollout.to_dict()
        doc.pop("baselines")
        doc.pop("signatures", None)
        return {
            **doc,
            "percent": rollout.percent,
            "layer": rollout.layer_id,
            "cohorts": {"treatment": len(cohorts.treatment), "control": len(cohorts.control)},
            "devicesPerModel": models,
            "signed": bool(rollout.signatures),
        }

    def latencies(self, who: Principal, name: str) -> tuple[list[float], list[float]]:
        """Per-device inference latency (ms) of the treatment and control samples in the current step's
        window: what the latency gate compares (the console plots them)."""
        rollout = self.rollout(who, name)
        reports = self._reports(rollout)
        cohorts = split(rollout.name, [r.device_id for r in reports], rollout.percent)
        treatment, control, _, _ = samples(rollout, reports, cohorts)
        return ([s.latency_ms for s in treatment if s.latency_ms is not None],
                [s.latency_ms for s in control if s.latency_ms is not None])  # fmt: skip

    # -- the driver -------------------------------------------------------------------------

    def _reports(self, rollout: Rollout) -> list[DeviceReport]:
        match = target(rollout.group)
        reported = {m.device_id: m.reported for m in self.service.store.module_twins() if m.module_id == rollout.module}
        return [
            DeviceReport(d.id, reported.get(d.id, {}), _epoch(d.last_activity))
            for d in self.service.store.devices()
            if d.status is DeviceStatus.ENABLED and match(device_twin(d))
        ]

    def tick(self) -> list[Decision]:
        """One round over every unfinished rollout, if this process holds the lease."""
        now = self.clock()
        self.leading = self.store.acquire_lease(LEASE, self.holder, now, self.lease_s)
        if not self.leading:
            return []
        decisions = []
        for doc in self.store.rollouts():
            rollout = Rollout.from_dict(doc)
            if rollout.state.finished:
                self._reconcile(rollout)  # idempotent: finishes what a restart interrupted
                continue
            decision = decide(rollout, self._reports(rollout), now)
            new = replace(decision.rollout, version=rollout.version + 1)
            if not self.store.write_rollout(new.to_dict(), rollout.version):
                continue  # an operator changed it meanwhile: decide again next round
            if new.state is not rollout.state or new.step != rollout.step:
                log.warning("rollout %s: %s (step %d, %s)", new.name, decision.action, new.step, new.state)
            self._reconcile(new)
            decisions.append(replace(decision, rollout=new))
        return decisions

    def _reconcile(self, rollout: Rollout) -> None:
        """Make the deployments match the rollout's stored state."""
        system = Principal(Kind.OPERATOR, f"rollout:{rollout.name}")
        store = self.service.store
        layer = store.deployment(rollout.layer_id)
        if rollout.state in {RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.AWAITING_APPROVAL}:
            condition = treatment_condition(rollout.group, rollout.name, rollout.percent)
            if layer is None:
                request = PushRequest(
                    {"modulesContent": layer_content(rollout.module, rollout.model)},
                    name=rollout.layer_id,
                    target=condition,
                    priority=LAYER_PRIORITY,
                    layered=True,
                    labels={"rollout": rollout.name},
                    signatures=rollout.signatures.get(LAYER),
                )
                self._ignore_conflict(lambda: self.service.push(system, request))
            elif layer.target != condition:
                self.service.update(system, rollout.layer_id, {"targetCondition": condition})
            return
        if rollout.state is RolloutState.PROMOTED:
            self._promote(system, rollout)
        if layer is not None:
            self._ignore_missing(lambda: self.service.delete(system, rollout.layer_id))

    def _promote(self, system: Principal, rollout: Rollout) -> None:
        promoted_id = f"{rollout.base_deployment}+{rollout.name}"[:128]
        store = self.service.store
        base = store.deployment(rollout.base_deployment)
        if store.deployment(promoted_id) is None and base is not None:
            request = PushRequest(
                {"modulesContent": promoted_content(base.content, rollout.module, rollout.model)},
                name=promoted_id,
                target=base.target,
                priority=base.priority,
                labels={**base.labels, "promotedBy": rollout.name},
                signatures=rollout.signatures.get(PROMOTED),
            )
            self._ignore_conflict(lambda: self.service.push(system, request))
        if base is not None and store.deployment(promoted_id) is not None:
            self._ignore_missing(lambda: self.service.delete(system, rollout.base_deployment))

    @staticmethod
    def _ignore_conflict(call: Callable[[], object]) -> None:
        with contextlib.suppress(ConflictError):  # another instance did it
            call()

    @staticmethod
    def _ignore_missing(call: Callable[[], object]) -> None:
        with contextlib.suppress(NotFoundError):
            call()

    def tick_safely(self) -> None:
        """For the serving loop: a failing round is logged, never fatal."""
        try:
            decisions = self.tick()
            self.on_round(self.leading, decisions)
        except (FleetError, StoreError) as exc:
            log.error("rollout driver round failed: %s", exc)
