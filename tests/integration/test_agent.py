"""The edge agent against real runtimes: apply, update, remove, order, restart, rollback, crash.

Each scenario runs on every runtime in ``RUNTIMES`` with the same manifest. Waits are bounded
polls; nothing here asserts on speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from integration.agent_harness import Device, manifest, marks, module, wait_for
from outpost.agent.observed import Health, RunState
from outpost.agent.status import StatusCode
from outpost.errors import ManifestError

RUNTIMES = ["process", "docker"]


@pytest.fixture(params=RUNTIMES)
def device(request, tmp_path):
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
    dev = Device(request.param, tmp_path, f"t{uuid.uuid4().hex[:8]}")
    yield dev
    dev.cleanup()


def test_fresh_apply_update_and_removal(device, tmp_path):
    mark = tmp_path / "marks"
    env = {"BEHAVE_MARK": str(mark)}
    binds = [f"{tmp_path}:{tmp_path}"]
    doc = manifest({name: module(env=env, binds=binds) for name in ("a", "b", "c")})
    result = device.apply(doc)
    assert result.converged, result.description
    first = device.running()
    assert set(first) == {"edgeHub", "a", "b", "c"}
    status = device.state.status()
    assert status["lastDesiredStatus"]["code"] == 200
    assert status["modules"]["a"]["runtimeStatus"] == "running"
    assert status["systemModules"]["edgeHub"]["runtimeStatus"] == "running"

    # update one module: only that one is re-created
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["b"]["env"]["EXTRA"] = {"value": "1"}
    assert device.apply(doc).converged
    second = device.running()
    assert second["b"] != first["b"]
    assert {k: v for k, v in second.items() if k != "b"} == {k: v for k, v in first.items() if k != "b"}

    # removal: c goes away, the others stay untouched
    del doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["c"]
    assert device.apply(doc).converged
    third = device.running()
    assert set(third) == {"edgeHub", "a", "b"}
    assert third == {k: v for k, v in second.items() if k != "c"}
    assert "c" not in device.observe().modules


def test_startup_order_waits_for_each_group_to_be_healthy(device, tmp_path):
    mark = tmp_path / "marks"
    binds = [f"{tmp_path}:{tmp_path}"]

    def ordered(name: str, order: int) -> dict:
        env = {"BEHAVE_MARK": str(mark), "BEHAVE_HEALTH_FILE": str(tmp_path / f"{name}.up")}
        return module(order=order, env=env, binds=binds, health_file=tmp_path / f"{name}.up")

    modules = {"late": ordered("late", 5), "first": ordered("first", 1), "middle": ordered("middle", 3)}
    assert device.apply(manifest(modules)).converged
    wait_for(lambda: len(marks(mark)) == 3, what="three starts")
    assert [name for name, _, _ in sorted(marks(mark), key=lambda r: r[2])] == ["first", "middle", "late"]


def test_on_failure_restarts_a_crash_with_backoff(device):
    crash = {"BEHAVE_EXIT_AFTER": "0.3", "BEHAVE_EXIT_CODE": "3"}
    doc = manifest({"crashy": module(policy="on-failure", env=crash, cool_off=0.2)}, window=0.1)
    device.apply(doc, rollback=False)

    def restarted_twice() -> bool:
        device.tick()
        record = device.state.restarts().get("crashy")
        return record is not None and record.count >= 2

    wait_for(restarted_twice, what="two restarts")
    state = device.observe().modules["crashy"]
    assert state.exit_code in (None, 3)
    status = device.state.status()["modules"]["crashy"]
    assert status["restartCount"] >= 2
    assert status["lastRestartTimeUtc"]


@pytest.mark.parametrize(("policy", "code", "expected"), [("never", 3, "failed"), ("on-failure", 0, "stopped")])
def test_exits_that_are_not_restarted(device, policy, code, expected):
    env = {"BEHAVE_EXIT_AFTER": "0.2", "BEHAVE_EXIT_CODE": str(code)}
    result = device.apply(manifest({"once": module(policy=policy, env=env)}, window=0.1), rollback=False)
    wait_for(lambda: device.observe().modules["once"].state is RunState.EXITED, what="exit")
    time.sleep(0.5)  # longer than the cool-off: a restart would happen in the next round
    device.tick()
    assert device.state.status()["modules"]["once"]["runtimeStatus"] == expected
    assert device.state.restarts().get("once") is None or device.state.restarts()["once"].count == 0
    assert result.code in (StatusCode.OK, StatusCode.FAILED)


@pytest.mark.parametrize(("policy", "code"), [("never", 3), ("on-failure", 0)])
def test_an_exit_at_start_that_is_not_restarted_settles_at_once(device, policy, code):
    """A module that exits before it is ever seen running, and that its policy does not restart, is in its
    final state: the apply ends there (failed with the exit code if it was non-zero), not at the timeout."""
    env = {"BEHAVE_EXIT_AFTER": "0", "BEHAVE_EXIT_CODE": str(code)}
    doc = manifest({"keep": module(), "once": module(policy=policy, env=env)}, window=0.5)
    result = device.apply(doc, rollback=False, timeout=120)
    status = device.state.status()
    if code:
        assert result.code is StatusCode.FAILED
        # seen exited before it ran: "exited with code 3 and restartPolicy never does not restart it"; seen
        # running first: the health window's "crashed with exit code 3". Never "did not converge within 120s".
        assert "once: exited with code 3" in result.description or "once: crashed with exit code 3" in \
            result.description, result.description  # fmt: skip
        assert status["lastDesiredStatus"]["code"] == int(StatusCode.FAILED)
        assert status["modules"]["once"]["runtimeStatus"] == "failed"
    else:
        assert result.converged, result.description
        assert status["lastDesiredStatus"]["code"] == 200
        assert status["modules"]["once"]["runtimeStatus"] == "stopped"
    assert status["outpost"].get("converging") is not True
    assert status["modules"]["keep"]["runtimeStatus"] == "running"


def test_on_unhealthy_restarts_a_module_whose_probe_fails(device, tmp_path):
    health = tmp_path / "healthy"
    env = {"BEHAVE_HEALTH_FILE": str(health), "BEHAVE_UNHEALTHY_AFTER": "1.0"}
    doc = manifest(
        {"sick": module(policy="on-unhealthy", env=env, health_file=health, binds=[f"{tmp_path}:{tmp_path}"])},
        window=0.1,
    )
    result = device.apply(doc, rollback=False)
    assert result.converged, result.description

    def restarted() -> bool:
        device.tick()
        record = device.state.restarts().get("sick")
        return record is not None and record.count >= 1

    wait_for(restarted, timeout=30, what="restart of the unhealthy module")
    wait_for(lambda: device.observe().modules["sick"].health in (Health.STARTING, Health.HEALTHY), what="new start")


def test_failed_deployment_rolls_back_to_last_known_good(device, tmp_path):
    good = manifest({"app": module(env={"VERSION": "good"})}, window=1.0)
    assert device.apply(good).converged
    good_id = device.running()["app"]

    bad = manifest(
        {"app": module(env={"VERSION": "bad", "BEHAVE_EXIT_AFTER": "0.3", "BEHAVE_EXIT_CODE": "1"})}, window=2.0
    )
    result = device.apply(bad)
    assert not result.converged
    assert result.rolled_back_to == device.state.last_known_good().id
    assert "app" in result.description
    running = device.running()
    assert "app" in running
    assert running["app"] != good_id
    status = device.state.status()
    assert status["lastDesiredStatus"]["code"] == 500
    assert "rolled back" in status["lastDesiredStatus"]["description"]
    assert device.state.desired().id == device.state.last_known_good().id


def test_missing_image_or_command_fails_and_rolls_back(device, tmp_path):
    good = manifest({"app": module()}, window=0.5)
    assert device.apply(good).converged
    broken = module(image="outpost-test/does-not-exist:9")
    del broken["outpost"]["process"]  # the process runtime cannot run it either
    result = device.apply(manifest({"app": module(), "ghost": broken}, window=0.5))
    assert not result.converged
    assert "ghost" in result.failures
    assert "ghost" not in device.running()
    assert "app" in device.running()


def test_bad_manifest_is_refused_and_nothing_running_is_touched(device):
    assert device.apply(manifest({"app": module()}, window=0.2)).converged
    before = device.running()
    broken = manifest({"app": module(policy="sometimes")})
    with pytest.raises(ManifestError) as info:
        device.apply(broken)
    assert any(p.pointer.endswith("/modules/app/restartPolicy") for p in info.value.problems)
    assert device.running() == before


def _outpost(*args: str, cwd: Path, capture: bool = False) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "outpost"
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([str(exe), *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def test_kill_9_during_apply_then_apply_again_converges_without_duplicates(device, tmp_path):
    mark = tmp_path / "marks"
    env = {"BEHAVE_MARK": str(mark)}
    binds = [f"{tmp_path}:{tmp_path}"]
    doc = manifest({f"m{i}": module(order=i, env=env, binds=binds) for i in range(6)}, window=0.2)
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(doc))
    args = ["agent", "apply", str(path), "--state-dir", str(device.state.path), "--runtime", device.kind,
            "--namespace", device.namespace, "--json"]  # fmt: skip
    for delay in (0.3, 0.6, 0.9):
        proc = _outpost(*args, cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    final = _outpost(*args, cwd=tmp_path, capture=True)
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0, out.decode()
    modules = device.observe().modules
    assert set(modules) == {"edgeHub", *(f"m{i}" for i in range(6))}
    assert all(m.running for m in modules.values())
    if device.kind == "process":
        alive = [pid for name, pid, _ in marks(mark) if _alive(pid)]
        assert len(alive) == 6, f"orphaned or duplicate module processes: {alive}"
    else:
        import docker

        client = docker.from_env()
        try:
            owned = client.containers.list(all=True, filters={"label": f"io.outpost.agent={device.namespace}"})
            assert sorted(c.name for c in owned) == sorted(f"{device.namespace}-{m}" for m in modules)
        finally:
            client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_reboot_without_network_brings_the_last_deployment_back(device, tmp_path):
    mark = tmp_path / "marks"
    doc = manifest({"app": module(env={"BEHAVE_MARK": str(mark)}, binds=[f"{tmp_path}:{tmp_path}"])}, window=0.2)
    assert device.apply(doc).converged
    # "reboot": every module dies, the agent process is gone; only the state dir survives
    for name, state in device.observe().modules.items():
        device.runtime.stop(name, state.id, timeout=2)
    assert device.running() == {}
    args = ["--state-dir", str(device.state.path), "--runtime", device.kind, "--namespace", device.namespace]
    agent = _outpost("agent", "run", *args, "--metrics-port", "0", "--interval", "0.5", cwd=tmp_path)
    fresh = Device(device.kind, tmp_path, device.namespace)
    try:
        wait_for(lambda: set(fresh.running()) == {"edgeHub", "app"}, timeout=60, what="modules back after reboot")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)


def test_status_stopped_module_is_created_but_not_run_then_started(device):
    doc = manifest({"idle": module(status="stopped"), "busy": module()}, window=0.2)
    assert device.apply(doc).converged
    modules = device.observe().modules
    assert modules["idle"].state is RunState.CREATED
    assert modules["busy"].running
    assert device.state.status()["modules"]["idle"]["runtimeStatus"] == "stopped"
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["idle"]["status"] = "running"
    assert device.apply(doc).converged
    assert device.observe().modules["idle"].running
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["busy"]["status"] = "stopped"
    before = device.observe().modules["busy"].id
    assert device.apply(doc).converged
    after = device.observe().modules["busy"]
    assert not after.running
    assert after.id == before  # stopped in place, not re-created


def test_run_follows_a_new_manifest_during_the_health_window_and_does_not_retry_a_failed_one(tmp_path):
    import threading

    device = Device("process", tmp_path, f"t{uuid.uuid4().hex[:8]}")
    current: dict = {"doc": manifest({"app": module(env={"V": "1"})}, window=30.0)}
    stop = threading.Event()
    loop = threading.Thread(
        target=device.reconciler.run, args=(stop,), kwargs={"source": lambda: current["doc"], "interval": 0.2}
    )
    loop.start()
    try:
        wait_for(lambda: "app" in device.running(), what="first deployment running")
        first = device.running()["app"]
        began = time.monotonic()
        current["doc"] = manifest({"app": module(env={"V": "2"})}, window=0.5)  # inside v1's 30 s window
        wait_for(lambda: device.running().get("app") not in (None, first), timeout=20, what="v2 applied")
        assert time.monotonic() - began < 15  # did not wait out v1's health window
        wait_for(lambda: device.state.last_known_good() is not None, what="v2 recorded as last known good")
        good = device.state.last_known_good().id
        crash = {"V": "3", "BEHAVE_EXIT_AFTER": "0.2", "BEHAVE_EXIT_CODE": "1"}
        current["doc"] = manifest({"app": module(env=crash)}, window=1.0)
        metric = device.reconciler.metrics.deployments.labels(result="rolled-back")
        wait_for(lambda: metric._value.get() >= 1, timeout=30, what="the bad manifest rolled back")
        time.sleep(3.0)
        assert metric._value.get() == 1  # not applied again and again
        assert device.state.desired().id == good
    finally:
        stop.set()
        loop.join(timeout=30)
        device.cleanup()
