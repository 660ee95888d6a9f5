"""The agent's command line on a real device (process runtime): apply, list, logs, restart,
check, and the Prometheus metrics of ``outpost agent run``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from integration.agent_harness import Device, manifest, module, wait_for

OUTPOST = str(Path(sys.executable).parent / "outpost")


def outpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_apply_list_logs_restart_check(tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    doc = manifest({"app": module(env={"BEHAVE_NAME": "app"})}, window=0.3)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    ns = f"cli{uuid.uuid4().hex[:6]}"
    done = outpost("agent", "apply", str(path), *state, "--runtime", "process", "--namespace", ns,
                   "--device-id", "gw-7", "--json", cwd=tmp_path)  # fmt: skip
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["converged"] is True
        assert result["code"] == 200

        listed = outpost("list", *state, "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        status = json.loads(listed.stdout)
        assert status["modules"]["app"]["runtimeStatus"] == "running"
        assert status["lastDesiredStatus"]["code"] == 200
        table = outpost("list", *state, cwd=tmp_path)
        assert "app" in table.stdout
        assert "running" in table.stdout

        wait_for(lambda: "app started" in outpost("logs", "app", *state, cwd=tmp_path).stdout, what="log line")
        before = status["modules"]["app"]["lastStartTimeUtc"]
        assert outpost("restart", "app", *state, cwd=tmp_path).returncode == 0
        after = json.loads(outpost("list", *state, "--json", cwd=tmp_path).stdout)["modules"]["app"]
        assert after["lastStartTimeUtc"] != before
        assert after["runtimeStatus"] == "running"

        missing = outpost("restart", "nope", *state, cwd=tmp_path)
        assert missing.returncode == 1
        assert "no module named 'nope' in the deployment; modules: app" in missing.stderr
        missing_logs = outpost("logs", "nope", *state, cwd=tmp_path)
        assert missing_logs.returncode == 1
        assert "no module named 'nope' in the deployment; modules: app" in missing_logs.stderr

        checks = outpost("check", *state, "--json", "--broker", f"127.0.0.1:{free_port()}", cwd=tmp_path)
        by_name = {c["name"]: c for c in json.loads(checks.stdout)}
        assert by_name["runtime"]["level"] == "ok"
        assert by_name["deployment"]["level"] == "ok"
        assert by_name["broker"]["level"] == "warn"
        assert by_name["state disk"]["level"] in ("ok", "warn")
        assert checks.returncode == 1  # the broker check found a problem
    finally:
        Device("process", tmp_path, ns).cleanup()


def test_list_without_state_says_what_to_do(tmp_path):
    done = outpost("list", "--state-dir", str(tmp_path / "none"), cwd=tmp_path)
    assert done.returncode == 1
    assert "outpost agent apply" in done.stderr


def test_apply_refuses_a_bad_manifest_with_pointers(tmp_path):
    doc = manifest({"app": module(policy="sometimes")})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    done = outpost(
        "agent", "apply", str(path), "--state-dir", str(tmp_path / "s"), "--runtime", "process", cwd=tmp_path
    )
    assert done.returncode == 1
    assert "/modules/app/restartPolicy: 'sometimes' is not one of" in done.stderr
    assert "nothing running was changed" in done.stderr


def test_agent_run_serves_prometheus_metrics(tmp_path):
    port = free_port()
    doc = manifest({"app": module()}, window=0.2)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    ns = f"met{uuid.uuid4().hex[:6]}"
    args = ["agent", "run", "--manifest", str(path), "--state-dir", str(tmp_path / "state"), "--runtime", "process",
            "--namespace", ns, "--metrics-port", str(port), "--interval", "0.5"]  # fmt: skip
    agent = subprocess.Popen([OUTPOST, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                return ""

        converged = 'outpost_agent_deployments_total{result="converged"} 1.0'
        text = wait_for(lambda: (t := scrape()) and converged in t and t, timeout=60, what="a converged deployment")
        assert 'outpost_agent_modules{state="running"} 2.0' in text
        assert "outpost_agent_reconcile_seconds_count" in text
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        Device("process", tmp_path, ns).cleanup()
