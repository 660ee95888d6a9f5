"""What a new user meets in the first hour (issue 13): files named, modules named, statuses in words,
checks that fail when they find a problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.agent.state import StateDir, StoredDeployment
from outpost.cli import app
from outpost.cli.device import status_text

ROOT = Path(__file__).resolve().parents[3]
MOTOR = ROOT / "manifests" / "motor-monitor.json"
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def notjson(tmp_path: Path) -> Path:
    path = tmp_path / "notjson.json"
    path.write_text('{"modulesContent": ')
    return path


# -- 6: every file problem names the file ----------------------------------------------------


def test_validate_reports_missing_and_unparseable_files_with_the_others(tmp_path, notjson):
    missing = tmp_path / "missing.json"
    code, out, err = run("manifest", "validate", str(MOTOR), str(missing), str(notjson))
    assert code == 1
    assert f"{missing}: /: cannot read the file: No such file or directory" in out.splitlines()
    assert any(line.startswith(f"{notjson}: /: invalid JSON at line 1") for line in out.splitlines())
    assert f"{MOTOR}: valid manifest" in err
    assert f"{missing}: invalid: unreadable (1 problem(s)" in err
    assert f"{notjson}: invalid: not JSON (1 problem(s)" in err
    assert "unknown" not in err
    assert "2 of 3 file(s) invalid" in err


def test_validate_json_names_the_kind_of_bad_file(tmp_path, notjson):
    code, out, _ = run("manifest", "validate", "--json", str(tmp_path / "missing.json"), str(notjson))
    assert code == 1
    assert [r["kind"] for r in json.loads(out)] == ["unreadable", "not JSON"]


def test_show_names_the_layer_that_is_not_json(notjson):
    code, _, err = run("manifest", "show", str(MOTOR), "--layer", str(notjson))
    assert code == 1
    assert f"{notjson}: /: invalid JSON at line 1" in err
    assert f"fix the places in {notjson}" in " ".join(err.split())


def test_hub_run_names_the_manifest_that_is_not_json(notjson, tmp_path):
    code, _, err = run("hub", "run", "--manifest", str(notjson), "--state-dir", str(tmp_path / "hub"))
    assert code == 1
    assert f"{notjson}: /: invalid JSON at line 1" in err
    assert "no readable manifest" not in err
    assert "--manifest FILE or" not in err


def test_hub_run_names_a_missing_manifest(tmp_path):
    missing = tmp_path / "missing.json"
    code, _, err = run("hub", "run", "--manifest", str(missing), "--state-dir", str(tmp_path / "hub"))
    assert code == 1
    assert f"--manifest {missing}: No such file or directory" in " ".join(err.split())


# -- 5: logs/restart of a module the deployment does not have ---------------------------------


@pytest.fixture
def agent_state(tmp_path: Path) -> Path:
    """An agent state dir as `outpost agent apply` leaves it (process runtime: no Docker needed)."""
    state = StateDir(tmp_path / "agent")
    state.write("runtime.json", {"kind": "process", "namespace": "t13", "workdir": str(ROOT), "deviceId": "d"})
    document = json.loads(MOTOR.read_text())
    state.set_desired(StoredDeployment(id="motor-monitor@abc", version=1, document=document))
    return state.path


@pytest.mark.parametrize("command", ["logs", "restart"])
def test_unknown_module_is_named_with_the_deployments_modules(agent_state, command):
    code, _, err = run(command, "nosuchmodule", "--state-dir", str(agent_state))
    assert code == 1
    flat = " ".join(err.split())
    assert "no module named 'nosuchmodule' in the deployment; modules: " in flat
    assert "anomaly-detector" in flat
    assert "motor-sensor" in flat
    assert "createOptions" not in flat
    assert "Docker" not in flat


# -- 8: statuses are words ------------------------------------------------------------------------


def test_status_words():
    assert status_text(406, "converging").startswith("converging: modules are starting")
    assert status_text(406, "converging").endswith("(status code 406)")
    assert status_text(200, "") == "converged (status code 200)"
    assert status_text(500, "image missing") == "failed: image missing (status code 500)"
    assert status_text("", "") == "unknown"


def test_list_title_is_words_first(agent_state):
    StateDir(agent_state).set_status(
        {"lastDesiredStatus": {"code": 406, "description": "converging"}, "lastDesiredVersion": 1}
    )
    code, out, _ = run("list", "--state-dir", str(agent_state))
    assert code == 0
    flat = " ".join(out.split())
    assert "deployment motor-monitor@abc: converging: modules are starting" in flat
    assert "406 converging" not in flat


# -- 9: a check that finds a problem exits non-zero ---------------------------------------------


def test_check_on_a_missing_state_dir_fails_and_creates_nothing(tmp_path):
    missing = tmp_path / "nope" / "agent"
    code, out, _ = run("check", "--json", "--state-dir", str(missing), "--broker", "127.0.0.1:1")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["state dir"]["level"] == "error"
    assert "does not exist" in checks["state dir"]["message"]
    assert not (tmp_path / "nope").exists()


def test_check_with_an_unreachable_broker_fails(agent_state):
    code, out, _ = run("check", "--json", "--state-dir", str(agent_state), "--broker", "127.0.0.1:1")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)}
    assert checks["broker"]["level"] != "ok"


def test_check_broker_without_a_port_is_a_usage_error():
    code, _, err = run("check", "--broker", "notahost")
    assert code == 2
    assert "Invalid value for '--broker': expects HOST:PORT, got 'notahost'" in err


@pytest.mark.parametrize("command", ["logs", "restart"])
def test_module_commands_before_any_deployment_say_so(agent_state, command):
    (agent_state / "deployment.json").unlink()
    code, _, err = run(command, "x", "--state-dir", str(agent_state))
    assert code == 1
    assert "no deployment is applied" in " ".join(err.split())


def test_deeply_nested_json_is_a_named_problem(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 500 + "]" * 500)
    code, out, _ = run("manifest", "validate", str(deep), str(nested))
    assert code == 1
    assert f"{deep}: /: JSON nested too deeply to be a manifest" in out
    assert f"{nested}: /: JSON nested more than 100 levels deep" in out
    code, _, err = run("manifest", "show", str(nested))
    assert code == 1
    assert f"{nested}: /: JSON nested more than 100 levels deep" in err


def test_a_token_that_cannot_travel_in_a_header_is_refused_without_echoing_it():
    """Found by the command-tree test: a non-ASCII --token ended in UnicodeEncodeError."""
    code, out, err = run("deploy", "list", "--fleet", "http://127.0.0.1:1", "--token", "s3cret☃")
    assert code == 2
    assert "the operator token is printable ASCII" in err
    assert "s3cret" not in out + err
