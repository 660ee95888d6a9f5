"""Restart policy and backoff on a fake clock (pure functions; no sleeping)."""

from __future__ import annotations

import pytest

from outpost.agent.observed import Health, ModuleState, RunState
from outpost.agent.restarts import Decision, RestartRecord, RuntimeStatus, decide, runtime_status, settle
from outpost.agent.spec import Backoff, ModuleSpec
from outpost.manifest.models import RestartPolicy, RestartTuning


def crashed(finished_at: float, code: int = 1) -> ModuleState:
    return ModuleState(
        name="m", id="c", image="i", config_hash="h", state=RunState.EXITED, exit_code=code, finished_at=finished_at
    )


@pytest.mark.parametrize(
    ("count", "delay"), [(0, 10), (1, 20), (2, 40), (3, 80), (4, 160), (5, 300), (19, 300), (500, 300)]
)
def test_azure_backoff_shape(count, delay):
    assert Backoff().delay(count) == delay


def test_tuning_overrides_only_what_it_sets():
    merged = Backoff().merged(RestartTuning(coolOffSecs=0.5, maxRestarts=3))
    assert merged == Backoff(cool_off_secs=0.5, max_backoff_secs=300, max_restarts=3, healthy_reset_secs=600)
    assert Backoff().merged(RestartTuning(healthyResetMins=2)).healthy_reset_secs == 120


def test_restart_sequence_on_fake_clock():
    """A module that keeps crashing is restarted after 10, 20, 40 s ... then given up on."""
    spec = ModuleSpec(name="m", image="i", restart_policy=RestartPolicy.ALWAYS, backoff=Backoff(max_restarts=4))
    record, now, waits = RestartRecord(), 0.0, []
    while True:
        state = crashed(finished_at=now)
        decision, due = decide(spec, state, record, now)
        if decision is Decision.GIVE_UP:
            break
        assert decision is Decision.WAIT
        waits.append(due - now)
        now = due
        assert decide(spec, state, record, now)[0] is Decision.RESTART_NOW
        record = RestartRecord(count=record.count + 1, last_restart=now)
        now += 1.0  # it runs one second, then crashes again
    assert waits == [10, 20, 40, 80]
    assert runtime_status(spec, crashed(now), record, now) is RuntimeStatus.FAILED


def test_clock_jump_backwards_restarts_instead_of_parking():
    spec = ModuleSpec(name="m", image="i")
    decision, _ = decide(spec, crashed(finished_at=10_000.0), RestartRecord(), now=50.0)
    assert decision is Decision.RESTART_NOW


def test_counter_resets_after_healthy_period():
    spec = ModuleSpec(name="m", image="i", backoff=Backoff(healthy_reset_secs=600))
    running = ModuleState(name="m", id="c", image="i", config_hash="h", state=RunState.RUNNING, started_at=1000.0)
    records = {"m": RestartRecord(count=7, last_restart=1000.0)}
    assert settle(records, {"m": spec}, {"m": running}, now=1599.0)["m"].count == 7
    assert settle(records, {"m": spec}, {"m": running}, now=1600.0)["m"].count == 0
    sick = ModuleState(
        name="m", id="c", image="i", config_hash="h", state=RunState.RUNNING, started_at=0.0, health=Health.UNHEALTHY
    )
    assert settle(records, {"m": spec}, {"m": sick}, now=5000.0)["m"].count == 7
    assert settle(records, {}, {}, now=5000.0) == {}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (RunState.RUNNING, RuntimeStatus.RUNNING),
        (RunState.CREATED, RuntimeStatus.BACKOFF),
    ],
)
def test_runtime_status_of_live_states(state, status):
    spec = ModuleSpec(name="m", image="i")
    module = ModuleState(name="m", id="c", image="i", config_hash="h", state=state)
    assert runtime_status(spec, module, RestartRecord(), 0.0) is status


def test_runtime_status_of_exits():
    never = ModuleSpec(name="m", image="i", restart_policy=RestartPolicy.NEVER)
    assert runtime_status(never, crashed(0.0, code=0), RestartRecord(), 5.0) is RuntimeStatus.STOPPED
    assert runtime_status(never, crashed(0.0, code=2), RestartRecord(), 5.0) is RuntimeStatus.FAILED
    always = ModuleSpec(name="m", image="i", restart_policy=RestartPolicy.ALWAYS)
    assert runtime_status(always, crashed(0.0, code=0), RestartRecord(), 5.0) is RuntimeStatus.BACKOFF
    assert runtime_status(None, None, RestartRecord(), 5.0) is RuntimeStatus.UNKNOWN


@pytest.mark.parametrize(
    ("free_gib", "total_gib", "level"),
    [(50, 100, "ok"), (5, 100, "warn"), (1.5, 10, "warn"), (0.1, 100, "error"), (1, 100, "error")],
)
def test_disk_check_levels(free_gib, total_gib, level):
    from pathlib import Path

    from outpost.agent.diagnostics import check_disk

    gib = 1024**3
    check = check_disk("disk", Path("/x"), int(total_gib * gib), int(free_gib * gib))
    assert check.level.value == level
    assert check.hint or level == "ok"
