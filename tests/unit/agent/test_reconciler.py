"""Reconciler over the in-memory runtime with a fake clock: failed commands back off, recover,
and are retried at once when the manifest changes or `outpost restart` asks."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from outpost.agent.failures import Failures, restart_module
from outpost.agent.fake_runtime import FakeRuntime
from outpost.agent.reconciler import Reconciler
from outpost.agent.spec import Desired, ModuleSpec
from outpost.agent.state import StateDir
from outpost.backoff import Backoff
from outpost.errors import PermanentError, TemporaryError
from outpost.manifest.models import ImagePullPolicy, RestartPolicy

CORPUS = Path(__file__).parents[2] / "corpus" / "valid"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, secs: float) -> None:
        self.now += secs


class FakeStop(threading.Event):
    """A stop event whose waits advance the fake clock instead of sleeping; set after ``until``."""

    def __init__(self, clock: Clock, until: float) -> None:
        super().__init__()
        self.clock, self.until, self.waits = clock, until, []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.sleep(max(timeout, 0.001))
        if self.clock.now >= self.until:
            self.set()
        return self.is_set()


def spec(name: str, **kw: Any) -> ModuleSpec:
    kw.setdefault("image", f"repo/{name}:1")
    kw.setdefault("pull_policy", ImagePullPolicy.NEVER)
    return ModuleSpec(name=name, **kw)


def desired(*specs: ModuleSpec, id: str = "d@1") -> Desired:
    return Desired(deployment_id=id, modules={s.name: s for s in specs})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(clock: Clock) -> FakeRuntime:
    return FakeRuntime(clock=clock)


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


def reconciler(runtime: FakeRuntime, state: StateDir, clock: Clock) -> Reconciler:
    return Reconciler(
        runtime, state, clock=clock, sleep=clock.sleep, command_backoff=Backoff(first=1.0, cap=8.0), poll_secs=0.25
    )


def rounds_until(rec: Reconciler, want: Desired, clock: Clock, secs: float, step: float = 0.25) -> None:
    end = clock.now + secs
    while clock.now < end:
        rec.reconcile(want)
        clock.sleep(step)


def test_a_failing_create_backs_off_exponentially_and_recovers(
    runtime: FakeRuntime, state: StateDir, clock: Clock
) -> None:
    rec, want = reconciler(runtime, state, clock), desired(spec("m"))
    runtime.fail("create", "m", TemporaryError("engine busy"))
    start = clock.now
    attempts: list[float] = []
    while clock.now < start + 20:
        before = runtime.count("create", "m")
        rec.reconcile(want)
        if runtime.count("create", "m") > before:
            attempts.append(clock.now - start)
        clock.sleep(0.25)
    assert attempts == [0.0, 1.0, 3.0, 7.0, 15.0]  # waits 1, 2, 4, 8 (capped)
    module = state.status()["modules"]["m"]  # type: ignore[index]
    assert module["runtimeStatus"] == "backoff"
    assert module["lastFailure"]["action"] == "create"
    assert module["lastFailure"]["attempts"] == 5
    assert module["lastFailure"]["nextAttemptUtc"] is not None
    assert "engine busy" in module["statusDescription"]

    runtime.heal("create", "m")
    rounds_until(rec, want, clock, 9)
    assert runtime.modules["m"].running
    assert not rec.failures
    assert "lastFailure" not in state.status()["modules"]["m"]  # type: ignore[index]
    assert state.failures() == {}


def test_one_failing_module_does_not_hold_back_another(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    rec = reconciler(runtime, state, clock)
    runtime.fail("create", "bad", TemporaryError("no"))
    round_ = rec.reconcile(desired(spec("bad"), spec("good")))
    assert runtime.modules["good"].running
    assert set(round_.outcome.failures) == {"bad"}
    assert round_.plan.wake_at == clock.now + 1.0


def test_a_permanent_failure_waits_for_outpost_restart(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    rec, want = reconciler(runtime, state, clock), desired(spec("m"))
    runtime.fail("create", "m", PermanentError("bad create options"), times=1)
    rec.reconcile(want)
    rounds_until(rec, want, clock, 600, step=5)
    assert runtime.count("create", "m") == 1
    module = state.status()["modules"]["m"]  # type: ignore[index]
    assert module["runtimeStatus"] == "failed"
    assert module["lastFailure"]["permanent"] is True
    assert module["lastFailure"]["nextAttemptUtc"] is None
    assert "outpost restart m" in module["statusDescription"]

    done = restart_module(state, runtime, "m", clock.now)  # no container to restart: the request is enough
    assert done == "the agent retries the failed commands of m now"
    clock.sleep(0.25)
    rec.reconcile(want)
    assert runtime.count("create", "m") == 2
    assert runtime.modules["m"].running


def test_restart_of_an_unknown_module_still_fails(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    with pytest.raises(PermanentError):
        restart_module(state, runtime, "nope", clock.now)


def test_a_changed_module_is_tried_at_once_during_its_backoff(
    runtime: FakeRuntime, state: StateDir, clock: Clock
) -> None:
    rec = reconciler(runtime, state, clock)
    runtime.fail("create", "m", TemporaryError("no"))
    for attempt in range(4):
        if attempt:
            clock.sleep(rec.failures.wake_at() - clock.now)  # type: ignore[operator]
        rec.reconcile(desired(spec("m")))
    assert runtime.count("create", "m") == 4
    clock.sleep(0.1)  # in the middle of an 8 s backoff
    rec.reconcile(desired(spec("m")))
    assert runtime.count("create", "m") == 4
    rec.reconcile(desired(spec("m", image="repo/m:2")))  # the manifest changed the module
    assert runtime.count("create", "m") == 5
    rec.reconcile(desired(spec("m", image="repo/m:2"), id="d@2"))  # and a new deployment
    assert runtime.count("create", "m") == 6


def test_failures_survive_an_agent_restart(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    runtime.fail("create", "m", TemporaryError("no"))
    reconciler(runtime, state, clock).reconcile(desired(spec("m")))
    again = reconciler(runtime, state, clock)
    assert again.failures.of("m")["create"].retry.failures == 1
    again.reconcile(desired(spec("m")))
    assert runtime.count("create", "m") == 1


def test_unreadable_failure_records_mean_retry_now() -> None:
    assert not Failures.from_json({"m": {"create": {"nonsense": 1}}, "n": "x"})


def manifest(image: str = "repo/m:1") -> dict[str, Any]:
    document = json.loads((CORPUS / "minimal.json").read_text())
    agent = document["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["systemModules"]["edgeHub"]["imagePullPolicy"] = "never"
    agent["modules"] = {
        "m": {
            "version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
            "imagePullPolicy": "never", "settings": {"image": image, "createOptions": "{}"},
        }
    }  # fmt: skip
    agent["outpost"] = {"rollback": {"enabled": False, "healthWindowSecs": 1}}
    return document


def test_run_loop_does_not_spin_on_a_failing_command(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    """The bug: a failing create was tried every 0.25 s (240 times a minute) with a warning each time."""
    rec = reconciler(runtime, state, clock)
    document = manifest()
    assert rec.apply(document, timeout=30.0).converged
    runtime.fail("create", "m", TemporaryError("image not found locally"))
    runtime.exit("m", 1)
    runtime.fail("start", "m", TemporaryError("engine busy"))
    stop = FakeStop(clock, until=clock.now + 60)
    rec.run(stop, source=lambda: document, interval=5.0)
    assert 4 <= runtime.count("start", "m") <= 10  # 1, 2, 4, 8, 8, ... seconds apart, not 0.25
    assert min(stop.waits) >= 0.25
    assert not runtime.modules["m"].running


def test_run_loop_wakes_a_backoff_for_a_new_manifest(runtime: FakeRuntime, state: StateDir, clock: Clock) -> None:
    rec = reconciler(runtime, state, clock)
    assert rec.apply(manifest(), timeout=30.0).converged
    runtime.fail("start", "m", PermanentError("cannot start"), times=1)
    runtime.exit("m", 1)
    documents = [manifest()] * 4 + [manifest("repo/m:2")] * 100
    stop = FakeStop(clock, until=clock.now + 120)
    rec.run(stop, source=lambda: copy.deepcopy(documents.pop(0) if len(documents) > 1 else documents[0]))
    assert runtime.count("start", "m") == 3  # the first apply, the permanent failure, the new deployment
    assert runtime.modules["m"].image == "repo/m:2"
    assert runtime.modules["m"].running


class ExitsAtStart(FakeRuntime):
    """Modules named in ``codes`` exit with that code as soon as they start (before any round sees them run)."""

    def __init__(self, codes: dict[str, int], **kw: Any) -> None:
        super().__init__(**kw)
        self.codes = codes

    def start(self, module: str) -> None:
        super().start(module)
        if module in self.codes:
            self.exit(module, self.codes[module])


@pytest.mark.parametrize(
    ("policy", "code", "converged"),
    [(RestartPolicy.NEVER, 3, False), (RestartPolicy.NEVER, 0, True), (RestartPolicy.ON_FAILURE, 0, True)],
)
def test_an_exit_its_policy_does_not_restart_ends_converging(
    state: StateDir, clock: Clock, policy: RestartPolicy, code: int, converged: bool
) -> None:
    """Seen exited before it ever ran: its final state. A non-zero exit fails the apply at once with the
    reason (not "converging" until the timeout); exit 0 is a finished job (Azure's runtimeStatus "stopped")."""
    runtime = ExitsAtStart({"once": code}, clock=clock)
    rec = reconciler(runtime, state, clock)
    started = clock.now
    ok, why, failures = rec.converge(
        desired(spec("keep"), spec("once", restart_policy=policy)), timeout=300, health_window=1.0
    )
    assert clock.now - started < 10  # fake clock: rounds, not the 300 s timeout
    assert ok is converged, why
    if not converged:
        assert why == "once: exited with code 3 and restartPolicy never does not restart it"
        assert set(failures) == {"once"}
    module = state.status()["modules"]["once"]  # type: ignore[index]
    assert module["runtimeStatus"] == ("stopped" if code == 0 else "failed")
