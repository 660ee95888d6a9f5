"""Planner: (desired, observed) -> exactly these commands. Pure, no Docker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from outpost.agent.commands import Create, Pull, Remove, Start, Stop
from outpost.agent.observed import Health, ModuleState, Observed, RunState
from outpost.agent.planner import plan
from outpost.agent.restarts import RestartRecord
from outpost.agent.spec import Backoff, Desired, ModuleSpec, RegistryAuth
from outpost.manifest.models import ImagePullPolicy, ModuleStatus, RestartPolicy


def spec(name: str, **kw) -> ModuleSpec:
    kw.setdefault("image", f"repo/{name}:1")
    kw.setdefault("startup_order", 1)
    return ModuleSpec(name=name, **kw)


def desired(*specs: ModuleSpec, registries: tuple[RegistryAuth, ...] = ()) -> Desired:
    return Desired(deployment_id="d1", modules={s.name: s for s in specs}, registries=registries)


def state(s: ModuleSpec, run: RunState = RunState.RUNNING, **kw) -> ModuleState:
    kw.setdefault("id", f"c-{s.name}")
    kw.setdefault("image", s.image)
    kw.setdefault("config_hash", s.config_hash)
    return ModuleState(name=s.name, state=run, **kw)


def observed(*states: ModuleState, images: tuple[str, ...] = ()) -> Observed:
    return Observed(modules={s.name: s for s in states}, images=frozenset(images))


def test_fresh_apply_pulls_everything_first_then_starts_one_startup_group_per_round():
    hub, a, b = spec("edgeHub", startup_order=0), spec("a", startup_order=2), spec("b", startup_order=1)
    b2 = spec("b2", startup_order=1)
    images = ("repo/a:1", "repo/b:1", "repo/b2:1", "repo/edgeHub:1")
    first = plan(desired(a, b, b2, hub), observed())
    assert first.commands == [
        Pull("a", "repo/a:1", required=True),
        Pull("b", "repo/b:1", required=True),
        Pull("b2", "repo/b2:1", required=True),
        Pull("edgeHub", "repo/edgeHub:1", required=True),
        Create("edgeHub", hub, "d1"),
        Start("edgeHub"),
    ]
    second = plan(desired(a, b, b2, hub), observed(state(hub), images=images))
    assert second.commands == [
        Pull("a", "repo/a:1", required=False),
        Pull("b", "repo/b:1", required=False),
        Pull("b2", "repo/b2:1", required=False),
        Create("b", b, "d1"),
        Start("b"),
        Create("b2", b2, "d1"),
        Start("b2"),
    ]
    third = plan(desired(a, b, b2, hub), observed(state(hub), state(b), state(b2), images=images))
    assert third.commands == [Pull("a", "repo/a:1", required=False), Create("a", a, "d1"), Start("a")]


def test_next_group_waits_while_a_health_check_is_starting():
    a, b = spec("a", startup_order=1), spec("b", startup_order=2)
    images = ("repo/a:1", "repo/b:1")
    waiting = plan(desired(a, b), observed(state(a, health=Health.STARTING), images=images))
    assert [c for c in waiting.commands if not isinstance(c, Pull)] == []
    ready = plan(desired(a, b), observed(state(a, health=Health.HEALTHY), images=images))
    assert [c for c in ready.commands if not isinstance(c, Pull)] == [Create("b", b, "d1"), Start("b")]


def test_converged_device_plans_nothing():
    a, b = spec("a"), spec("b")
    result = plan(desired(a, b), observed(state(a), state(b), images=(a.image, b.image)))
    assert result.commands == []
    assert result.wake_at is None


def test_present_image_is_still_refreshed_but_not_required():
    a = spec("a")
    result = plan(desired(a), observed(images=(a.image,)))
    assert result.commands[0] == Pull("a", "repo/a:1", required=False)


def test_pull_policy_never_does_not_pull():
    a = spec("a", pull_policy=ImagePullPolicy.NEVER)
    assert plan(desired(a), observed()).commands == [Create("a", a, "d1"), Start("a")]


def test_shared_image_pulled_once_with_registry_credentials():
    auth = RegistryAuth(address="myacr.azurecr.io", username="u", password="p")
    a = spec("a", image="myacr.azurecr.io/x:1")
    b = spec("b", image="myacr.azurecr.io/x:1")
    result = plan(desired(a, b, registries=(auth,)), observed())
    assert [c for c in result.commands if isinstance(c, Pull)] == [Pull("a", "myacr.azurecr.io/x:1", True, auth)]


def test_changed_module_pulls_new_image_before_stopping_old_container():
    old = spec("a")
    new = replace(old, image="repo/a:2")
    current = state(old)
    result = plan(desired(new), observed(current, images=(old.image,)))
    assert result.commands == [
        Pull("a", "repo/a:2", required=True),
        Stop("a", "c-a"),
        Remove("a", "c-a"),
        Create("a", new, "d1"),
        Start("a"),
    ]


def test_env_change_recreates_but_status_change_does_not():
    a = spec("a", env={"K": "1"})
    assert plan(desired(replace(a, env={"K": "2"})), observed(state(a), images=(a.image,))).commands[1:3] == [
        Stop("a", "c-a"),
        Remove("a", "c-a"),
    ]
    stopped = replace(a, status=ModuleStatus.STOPPED)
    assert stopped.config_hash == a.config_hash
    assert plan(desired(stopped), observed(state(a), images=(a.image,))).commands == [Stop("a", "c-a")]


def test_removed_module_is_stopped_and_removed_first():
    a, gone = spec("a"), spec("gone")
    result = plan(desired(a), observed(state(a), state(gone), images=(a.image,)))
    assert result.commands == [Stop("gone", "c-gone"), Remove("gone", "c-gone")]


def test_exited_removed_module_is_only_removed():
    a, gone = spec("a"), spec("gone")
    result = plan(desired(a), observed(state(a), state(gone, RunState.EXITED, exit_code=0), images=(a.image,)))
    assert result.commands == [Remove("gone", "c-gone")]


def test_created_but_not_started_module_is_started():
    a = spec("a")
    assert plan(desired(a), observed(state(a, RunState.CREATED), images=(a.image,))).commands == [Start("a")]


def test_stopped_module_is_created_but_not_started():
    a = spec("a", status=ModuleStatus.STOPPED, pull_policy=ImagePullPolicy.NEVER)
    assert plan(desired(a), observed()).commands == [Create("a", a, "d1")]


@pytest.mark.parametrize(
    ("policy", "exit_code", "restarts"),
    [
        (RestartPolicy.NEVER, 1, False),
        (RestartPolicy.NEVER, 0, False),
        (RestartPolicy.ON_FAILURE, 1, True),
        (RestartPolicy.ON_FAILURE, 0, False),
        (RestartPolicy.ON_UNHEALTHY, 1, True),
        (RestartPolicy.ON_UNHEALTHY, 0, False),
        (RestartPolicy.ALWAYS, 0, True),
        (RestartPolicy.ALWAYS, 137, True),
    ],
)
def test_restart_policy_on_exit(policy, exit_code, restarts):
    a = spec("a", restart_policy=policy)
    exited = state(a, RunState.EXITED, exit_code=exit_code, finished_at=100.0)
    result = plan(desired(a), observed(exited, images=(a.image,)), now=100.0 + 10.0)
    assert result.commands == ([Start("a", restart=True)] if restarts else [])


@pytest.mark.parametrize("policy", list(RestartPolicy))
def test_only_on_unhealthy_restarts_a_running_unhealthy_module(policy):
    a = spec("a", restart_policy=policy)
    sick = state(a, health=Health.UNHEALTHY, started_at=0.0)
    result = plan(desired(a), observed(sick, images=(a.image,)), now=1000.0)
    expected = [Stop("a", "c-a"), Start("a", restart=True)] if policy is RestartPolicy.ON_UNHEALTHY else []
    assert result.commands == expected


def test_backoff_waits_until_cool_off_has_passed():
    a = spec("a", restart_policy=RestartPolicy.ALWAYS)
    exited = state(a, RunState.EXITED, exit_code=1, finished_at=1000.0)
    records = {"a": RestartRecord(count=3, last_restart=990.0)}
    waiting = plan(desired(a), observed(exited, images=(a.image,)), records, now=1000.0 + 79.0)
    assert waiting.commands == []
    assert waiting.wake_at == 1000.0 + 80.0  # 10 s * 2**3
    due = plan(desired(a), observed(exited, images=(a.image,)), records, now=1000.0 + 80.0)
    assert due.commands == [Start("a", restart=True)]


def test_gives_up_after_max_restarts():
    a = spec("a", backoff=Backoff(max_restarts=5))
    exited = state(a, RunState.EXITED, exit_code=1, finished_at=0.0)
    result = plan(desired(a), observed(exited, images=(a.image,)), {"a": RestartRecord(count=5)}, now=10_000.0)
    assert result.commands == []
    assert result.failed == ("a",)


def test_stopped_desired_module_is_never_restarted():
    a = spec("a", status=ModuleStatus.STOPPED, restart_policy=RestartPolicy.ALWAYS)
    exited = state(a, RunState.EXITED, exit_code=1, finished_at=0.0)
    assert plan(desired(a), observed(exited, images=(a.image,)), now=1000.0).commands == []


@pytest.mark.parametrize("policy", list(RestartPolicy))
def test_module_stopped_by_a_reboot_is_started_whatever_its_policy(policy):
    a = spec("a", restart_policy=policy)
    before_boot = state(a, RunState.EXITED, exit_code=137, finished_at=50.0)
    booted = Observed(modules={"a": before_boot}, images=frozenset({a.image}), boot_time=100.0)
    assert plan(desired(a), booted, now=120.0).commands == [Start("a")]
    after_boot = Observed(
        modules={"a": replace(before_boot, finished_at=110.0)}, images=frozenset({a.image}), boot_time=100.0
    )
    expected = [] if policy is RestartPolicy.NEVER else [Start("a", restart=True)]
    assert plan(desired(a), after_boot, now=200.0).commands == expected
