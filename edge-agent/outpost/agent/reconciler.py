"""The reconcile loop: observe, plan, run, report; repeat until the device matches.

``apply`` takes a manifest document, refuses it whole if it is invalid (nothing running is
touched), stores it as the desired deployment, converges, watches a health window, and
then either records it as last known good or rolls back to the previous good one. ``run``
does the same for a manifest source forever, waking on a timer and on backoff deadlines;
every round plans from fresh state, never from what an event said. Called by the CLI
(``outpost agent apply|run``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from outpost.agent.failures import COMMAND_BACKOFF, CommandFailure, Failures
from outpost.agent.metrics import AgentMetrics
from outpost.agent.observed import ModuleState, Observed, RunState
from outpost.agent.planner import Plan, plan
from outpost.agent.restarts import Decision, RestartRecord, decide, settle
from outpost.agent.runner import Outcome, Runner
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.spec import Desired
from outpost.agent.state import StateDir, StoredDeployment, deployment_hash
from outpost.agent.status import DeploymentStatus, StatusCode, refusal_of, reported
from outpost.backoff import Backoff
from outpost.errors import ManifestError, PermanentError, TemporaryError
from outpost.manifest import load_manifest
from outpost.manifest.models import ModuleStatus

__all__ = ["ApplyResult", "Reconciler", "Round"]

log = logging.getLogger("outpost.agent")

Event = Callable[[str, dict[str, Any]], None]


def _quiet(kind: str, fields: dict[str, Any]) -> None:
    log.debug("%s %s", kind, fields)


def _admit_all(document: dict[str, Any]) -> None:
    """No trust policy: every valid manifest may be applied."""


@dataclass
class Round:
    """One observe-plan-run pass. ``plan`` holds what ran; ``held`` the modules whose failed
    commands were not due (their plan's wake time counts those too)."""

    observed: Observed
    plan: Plan
    outcome: Outcome
    held: dict[str, CommandFailure] = field(default_factory=dict)


@dataclass
class ApplyResult:
    """How an apply ended. ``code`` is Azure's lastDesiredStatus code."""

    converged: bool
    code: StatusCode
    description: str
    deployment_id: str = ""
    rolled_back_to: str = ""
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The outcome as ``--json`` commands print it (``agent apply``, ``bundle apply``)."""
        return {
            "converged": self.converged,
            "code": int(self.code),
            "description": self.description,
            "deployment": self.deployment_id,
            "rolledBackTo": self.rolled_back_to or None,
        }


class Reconciler:
    """Drives one runtime toward a deployment; owns the state dir's files while it runs."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        state: StateDir,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        metrics: AgentMetrics | None = None,
        on_event: Event = _quiet,
        poll_secs: float = 0.25,
        module_env: Callable[[str], Mapping[str, str]] | None = None,
        command_backoff: Backoff = COMMAND_BACKOFF,
        admit: Callable[[dict[str, Any]], object] = _admit_all,
    ) -> None:
        self.runtime = runtime
        self.state = state
        self.clock = clock
        self.sleep = sleep
        self.metrics = metrics or AgentMetrics()
        self.on_event = on_event
        self.poll_secs = poll_secs
        self.module_env = module_env
        self.admit = admit  # raises ManifestError (e.g. trust's ContentRefusedError) for content it refuses
        self.runner = Runner(runtime, clock)
        self.failures = Failures.from_json(state.failures(), command_backoff)  # failed commands waiting
        self._failures_written = self.failures.to_json()
        self.status = DeploymentStatus(version=0, code=StatusCode.UNKNOWN, description="no deployment yet")
        self.stopping = threading.Event()  # set by run()'s stop: long converges give up at once
        self._source: Callable[[], dict[str, Any] | None] | None = None  # run()'s manifest source
        self._failed = ""  # hash of the last manifest that failed and was rolled back
        self._platform: dict[str, str] | None = None
        self._last_report: dict[str, Any] | None = None

    # -- one round -----------------------------------------------------------------------------

    def desired_from(self, stored: StoredDeployment) -> Desired:
        manifest = load_manifest(stored.document)
        return Desired.from_manifest(manifest, deployment_id=stored.id, module_env=self.module_env)

    def reconcile(self, desired: Desired) -> Round:
        """Observe, plan and run once; persist restart records and the reported status."""
        began = time.monotonic()
        now = self.clock()
        observed = self.runtime.observe()
        records = settle(self.state.restarts(), desired.modules, observed.modules, now)
        planned = plan(desired, observed, records, now)
        self._take_retry_requests()
        self.failures.forget_stale(desired)
        commands, held = self.failures.hold(planned.commands, now)
        for command in commands:
            self.on_event("command", {"action": command.action, "module": command.module})
        outcome = self.runner.run(commands, records)
        for command in outcome.done:
            self.on_event("done", {"action": command.action, "module": command.module})
        for module, failure in outcome.failures.items():
            self.on_event("failed", {"module": module, "error": str(failure)})
        failed = {m: (outcome.failed[m], f, isinstance(f, PermanentError)) for m, f in outcome.failures.items()}
        self.failures.record(outcome.done, failed, desired, self.clock())
        failures = self.failures.to_json()
        if failures != self._failures_written:  # steady rounds read and write no file for this
            self.state.set_failures(failures)
            self._failures_written = failures
        self.state.set_restarts(outcome.records)
        if commands:
            observed = self.runtime.observe()
        self._report(desired, observed, outcome.records)
        self.metrics.observe_round(
            seconds=time.monotonic() - began,
            pull_seconds=outcome.pull_seconds,
            restarts=sum(1 for c in outcome.done if c.action == "start" and getattr(c, "restart", False)),
            observed=observed,
        )
        wakes = [t for t in (planned.wake_at, self.failures.wake_at()) if t is not None]
        current = replace(planned, commands=commands, wake_at=min(wakes) if wakes else None)
        return Round(observed=observed, plan=current, outcome=outcome, held=held)

    def _take_retry_requests(self) -> None:
        """Drop failures ``outpost restart MODULE`` asked to retry (requests newer than the failure)."""
        if self.failures:
            for module, at in self.state.retry_requests().items():
                self.failures.forget([module], before=at)

    def _report_refusal(self) -> None:
        """A refused deployment's reason in the stored status at once (a one-shot apply has no next round)."""
        document = self.state.status()
        if document is not None:
            document["lastDesiredStatus"] = {"code": int(self.status.code), "description": self.status.description}
            document["outpost"] = {**document.get("outpost", {}), "deploymentId": self.status.deployment_id,
                                   **refusal_of(self.status)}  # fmt: skip
            self.state.set_status(document)

    def _report(self, desired: Desired, observed: Observed, records: dict[str, RestartRecord]) -> None:
        if self._platform is None:
            try:
                self._platform = self.runtime.platform()
            except TemporaryError:
                self._platform = {}
        document = reported(
            desired=desired,
            observed=observed,
            records=records,
            now=self.clock(),
            deployment=self.status,
            platform=self._platform,
            runtime_kind=self.runtime.kind,
            failures=self.failures.latest(),
        )
        # Written (with fsync) only when something but the timestamp changed: steady rounds stay cheap.
        unchanged = {**document, "outpost": {**document["outpost"], "reportedAtUtc": None}}
        if unchanged != self._last_report:
            self.state.set_status(document)
            self._last_report = unchanged

    # -- converging ----------------------------------------------------------------------------

    def _ended(self, desired: Desired, observed: Observed) -> dict[str, ModuleState]:
        """Modules that should run but exited, and that their restart policy leaves exited (``never``,
        or ``on-failure``/``on-unhealthy`` after exit code 0): that is their final state."""
        ended: dict[str, ModuleState] = {}
        now = self.clock()
        for name, spec in desired.modules.items():
            state = observed.modules.get(name)
            if (
                spec.status is ModuleStatus.RUNNING and state is not None and state.config_hash == spec.config_hash
                and state.state in (RunState.EXITED, RunState.DEAD)
                and decide(spec, state, RestartRecord(), now)[0] is Decision.NOTHING
            ):  # fmt: skip
                ended[name] = state
        return ended

    def _settled(self, desired: Desired, observed: Observed) -> bool:
        """Every module that should run runs (and is not still starting its health check), or has ended."""
        ended = self._ended(desired, observed)
        for name, spec in desired.modules.items():
            state = observed.modules.get(name)
            if state is None or state.config_hash != spec.config_hash:
                return False
            if name in ended:
                continue
            if spec.status is ModuleStatus.RUNNING and (not state.running or state.health.value == "starting"):
                return False
            if spec.status is ModuleStatus.STOPPED and state.running:
                return False
        return set(observed.modules) <= set(desired.modules)

    def converge(self, desired: Desired, *, timeout: float, health_window: float) -> tuple[bool, str, dict[str, str]]:
        """Reconcile until settled, then watch ``health_window`` seconds for crashes."""
        deadline = self.clock() + timeout
        failures: dict[str, str] = {}
        while True:
            round_ = self.reconcile(desired)
            failures = {m: str(f) for m, f in round_.outcome.failures.items()}
            stuck = {m: f.error for m, f in round_.held.items() if f.permanent}  # failed permanently before
            if round_.outcome.permanent or stuck:
                failures = {**stuck, **failures}
                return False, "; ".join(f"{m}: {f}" for m, f in sorted(failures.items())), failures
            if round_.plan.failed:
                names = ", ".join(round_.plan.failed)
                return False, f"gave up restarting {names}", dict.fromkeys(round_.plan.failed, "restart limit reached")
            if not round_.plan and self._settled(desired, round_.observed):
                crashed = {
                    name: f"exited with code {state.exit_code} and restartPolicy "
                    f"{desired.modules[name].restart_policy} does not restart it"
                    for name, state in self._ended(desired, round_.observed).items()
                    if state.state is RunState.DEAD or (state.exit_code or 0) != 0
                }
                if crashed:  # as the health window would call it: no point waiting for the timeout
                    return False, "; ".join(f"{m}: {f}" for m, f in sorted(crashed.items())), crashed
                break
            if self._interrupted(desired.deployment_id):
                return False, "interrupted", failures
            if self.clock() >= deadline:
                pending = [
                    n for n, s in desired.modules.items() if s.status is ModuleStatus.RUNNING
                    and not (round_.observed.modules.get(n) and round_.observed.modules[n].running)
                ]  # fmt: skip
                why = (
                    "; ".join(f"{m}: {f}" for m, f in sorted(failures.items())) or f"not running: {', '.join(pending)}"
                )
                return False, f"did not converge within {timeout:g}s ({why})", failures
            self.sleep(self.poll_secs)
        self.on_event("converged", {"deployment": desired.deployment_id})
        return self._watch(desired, health_window)

    def _watch(self, desired: Desired, window: float) -> tuple[bool, str, dict[str, str]]:
        """Fail if any module crashes, turns unhealthy or is restarted within the window."""
        start_counts = {name: rec.count for name, rec in self.state.restarts().items()}
        end = self.clock() + window
        while self.clock() < end and not self._interrupted(desired.deployment_id):
            self.sleep(min(self.poll_secs * 4, max(0.0, end - self.clock())))
            round_ = self.reconcile(desired)
            bad: dict[str, str] = {}
            for name, spec in desired.modules.items():
                state = round_.observed.modules.get(name)
                if spec.status is not ModuleStatus.RUNNING or state is None:
                    continue
                if state.state in (RunState.EXITED, RunState.DEAD) and (state.exit_code or 0) != 0:
                    bad[name] = f"crashed with exit code {state.exit_code}"
                elif state.health.value == "unhealthy":
                    bad[name] = "health check failing"
            for name, record in round_.outcome.records.items():
                if record.count > start_counts.get(name, 0) and name not in bad:
                    bad[name] = f"restarted {record.count - start_counts.get(name, 0)} time(s)"
            if bad:
                why = "; ".join(f"{m}: {r}" for m, r in sorted(bad.items()))
                return False, f"not healthy within the {window:g}s health window ({why})", bad
        if self._interrupted(desired.deployment_id):
            return False, "interrupted", {}
        return True, "", {}

    def _interrupted(self, deployment_id: str) -> bool:
        """Stop converging: the agent is stopping, or a newer manifest supersedes this one."""
        if self.stopping.is_set():
            return True
        document = self._source() if self._source is not None else None
        return self._is_new(document, None, deployment_id)

    def _is_new(self, document: dict[str, Any] | None, current: StoredDeployment | None, current_id: str = "") -> bool:
        """A manifest from the source that should be applied: not the current one, not one that failed."""
        if document is None:
            return False
        digest = deployment_hash(document)
        current_id = current.id if current is not None else current_id
        return digest != self._failed and not (current_id and current_id.endswith(digest))

    # -- apply and run -------------------------------------------------------------------------

    def apply(
        self,
        document: dict[str, Any],
        *,
        name: str = "deployment",
        timeout: float = 300.0,
        health_window: float | None = None,
        rollback: bool | None = None,
    ) -> ApplyResult:
        """Apply a manifest document: validate, converge, watch, then keep it or roll back."""
        try:
            self.admit(document)
            manifest = load_manifest(document)
        except ManifestError as exc:
            self.status = DeploymentStatus(
                version=self.status.version, code=StatusCode.BAD_CONFIG, description=str(exc),
                deployment_id=f"{name}@{deployment_hash(document)}",  # what was refused (the fleet matches it)
                refused_from=name,
            )  # fmt: skip
            self._report_refusal()
            raise
        ext = manifest.edge_agent.outpost
        settings = ext.rollback if ext and ext.rollback else None
        window = health_window if health_window is not None else (settings.health_window_secs if settings else 60.0)
        allowed = rollback if rollback is not None else (settings.enabled if settings else True)
        stored = StoredDeployment(
            id=f"{name}@{deployment_hash(document)}", version=self.state.next_version(), document=document
        )
        self.state.set_desired(stored)
        self.failures = Failures(backoff=self.failures.backoff)  # a deployment asked for now is tried now
        good = self.state.last_known_good()
        if good is not None and good.id == stored.id and health_window is None:
            window = 0.0  # the same deployment proved itself already: converge, no second health window
        return self._converge_stored(stored, timeout=timeout, window=window, rollback=allowed)

    def _converge_stored(
        self, stored: StoredDeployment, *, timeout: float, window: float, rollback: bool
    ) -> ApplyResult:
        desired = self.desired_from(stored)
        self.status = DeploymentStatus(
            version=stored.version, code=StatusCode.UNKNOWN, description="converging", deployment_id=stored.id,
            converging=True,
        )  # fmt: skip
        ok, why, failures = self.converge(desired, timeout=timeout, health_window=window)
        if self._interrupted(stored.id):
            # Not failed: stopping (the next start resumes this apply) or superseded by a newer
            # manifest (which the run loop applies next). No verdict, no rollback.
            return ApplyResult(False, StatusCode.UNKNOWN, "interrupted", deployment_id=stored.id)
        if ok:
            self.state.set_last_known_good(stored)
            self.prune_images(desired, stored)
            self.status = DeploymentStatus(version=stored.version, code=StatusCode.OK, deployment_id=stored.id)
            self._report(desired, self.runtime.observe(), self.state.restarts())
            self.metrics.deployments.labels(result="converged").inc()
            return ApplyResult(True, StatusCode.OK, "", deployment_id=stored.id)
        self.metrics.deployments.labels(result="failed").inc()
        self._failed = stored.id.rpartition("@")[2]  # not retried by run() until the manifest changes
        good = self.state.last_known_good()
        if not rollback or good is None or good.id == stored.id:
            self.status = DeploymentStatus(
                version=stored.version, code=StatusCode.FAILED, description=why, deployment_id=stored.id
            )
            self._report(desired, self.runtime.observe(), self.state.restarts())
            return ApplyResult(False, StatusCode.FAILED, why, deployment_id=stored.id, failures=failures)
        self.on_event("rollback", {"from": stored.id, "to": good.id, "reason": why})
        log.warning("deployment %s failed (%s); rolling back to %s", stored.id, why, good.id)
        restored = StoredDeployment(id=good.id, version=stored.version, document=good.document)
        self.state.set_desired(restored)
        back_ok, back_why, _ = self.converge(self.desired_from(restored), timeout=timeout, health_window=0)
        description = f"{why}; rolled back to {good.id}" + ("" if back_ok else f", which also failed: {back_why}")
        self.status = DeploymentStatus(
            version=stored.version, code=StatusCode.FAILED, description=description, deployment_id=stored.id,
            rolled_back_to=good.id,
        )  # fmt: skip
        self._report(self.desired_from(restored), self.runtime.observe(), self.state.restarts())
        self.metrics.deployments.labels(result="rolled-back").inc()
        return ApplyResult(
            False, StatusCode.FAILED, description, deployment_id=stored.id, rolled_back_to=good.id, failures=failures
        )

    def prune_images(self, desired: Desired, stored: StoredDeployment) -> list[str]:
        """Keep each module's newest N images (``outpost.images.keepPerModule``, default 2); delete older
        ones that no module of this or the last known good deployment uses. Disk-full devices brick."""
        ext = load_manifest(stored.document).edge_agent.outpost
        keep = ext.images.keep_per_module if ext and ext.images else 2
        history = self.state.image_history()
        for name, spec in desired.modules.items():
            images = [i for i in history.get(name, []) if i != spec.image] + [spec.image]
            history[name] = images
        in_use = {spec.image for spec in desired.modules.values()}
        removed: list[str] = []
        for name, images in history.items():
            old, history[name] = images[:-keep], images[-keep:]
            for image in old:
                if image not in in_use and self.runtime.remove_image(image):
                    removed.append(image)
                    self.on_event("pruned", {"image": image, "module": name})
        self.state.set_image_history(history)
        return removed

    def resume(self) -> StoredDeployment | None:
        """What to run after a restart with no outside help: the stored desired, else last known good."""
        return self.state.desired() or self.state.last_known_good()

    def run(
        self,
        stop: threading.Event,
        *,
        source: Callable[[], dict[str, Any] | None] | None = None,
        name: str = "deployment",
        interval: float = 5.0,
        timeout: float = 300.0,
    ) -> None:
        """Keep the device converged until ``stop`` is set.

        On start it resumes what the state dir holds (finishing an apply a crash interrupted,
        with rollback), so a rebooted device with no network comes back by itself. ``source``
        is polled for a new manifest document; a changed, valid one is applied with rollback,
        an invalid one is logged and ignored while the current deployment keeps running.
        """
        self.stopping = stop
        self._source = source
        stored = self.resume()
        good = self.state.last_known_good()
        if stored is not None and (good is None or good.id != stored.id):
            self._converge_stored(stored, timeout=timeout, window=self._window(stored), rollback=True)
        while not stop.is_set():
            document = source() if source else None
            current = self.state.desired()
            if document is not None and self._is_new(document, current):
                try:
                    self.apply(document, name=name, timeout=timeout)
                except ManifestError as exc:
                    self._failed = deployment_hash(document)  # logged once, not every round
                    log.error("new manifest refused; the running deployment is untouched:\n%s", exc)
                current = self.state.desired()
            wait = interval
            if current is not None:
                try:
                    round_ = self.reconcile(self.desired_from(current))
                except TemporaryError as exc:
                    log.warning("reconcile failed, will retry: %s", exc)
                else:
                    # A round that ran commands looks again soon; failed ones wait out their backoff.
                    if round_.outcome.done:
                        wait = self.poll_secs
                    elif round_.plan.wake_at is not None:
                        wait = max(0.0, min(interval, round_.plan.wake_at - self.clock()))
            stop.wait(wait)  # a stop ends the wait at once

    @staticmethod
    def _window(stored: StoredDeployment) -> float:
        ext = load_manifest(stored.document).edge_agent.outpost
        return ext.rollback.health_window_secs if ext and ext.rollback else 60.0
