"""A device with a trust root (process runtime, through the CLI): signed content runs; unsigned,
unknown-key and tampered content is refused with the reason in the status, and what runs stays."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from integration.agent_harness import Device, manifest, module, wait_for

OUTPOST = str(Path(sys.executable).parent / "outpost")


def outpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_trust_root_refuses_what_it_must_and_keeps_running(tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    ns = f"trust{uuid.uuid4().hex[:6]}"
    common = [*state, "--runtime", "process", "--namespace", ns]
    gen = outpost("keys", "generate", "-o", str(tmp_path / "operator"), "--json", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert "PRIVATE" not in gen.stdout + gen.stderr  # never printed
    assert stat.S_IMODE((tmp_path / "operator.key").stat().st_mode) == 0o600
    assert outpost("keys", "generate", "-o", str(tmp_path / "stranger"), cwd=tmp_path).returncode == 0
    added = outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    refused_private = outpost("agent", "trust", "add", str(tmp_path / "stranger.key"), *state, cwd=tmp_path)
    assert refused_private.returncode == 1
    assert "private key" in refused_private.stderr
    listed = json.loads(outpost("agent", "trust", "list", *state, "--json", cwd=tmp_path).stdout)
    assert [k["name"] for k in listed["keys"]] == ["operator"]

    doc = manifest({"app": module(env={"BEHAVE_NAME": "app"})}, window=0.3)
    plain = write(tmp_path / "plain.json", doc)
    signed = tmp_path / "signed.json"
    done = outpost("keys", "sign", str(plain), "--sign-key", str(tmp_path / "operator.key"), "-o", str(signed),
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        applied = outpost("agent", "apply", str(signed), *common, cwd=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert "named by tag only" in applied.stderr  # warned, accepted
        before = json.loads(outpost("list", *state, "--json", cwd=tmp_path).stdout)["modules"]["app"]

        changed = json.loads(signed.read_text())
        changed["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["app"]["env"]["X"] = {"value": "1"}
        by_stranger = json.loads(
            outpost("keys", "sign", str(plain), "--sign-key", str(tmp_path / "stranger.key"), cwd=tmp_path).stdout
        )
        cases = {
            "unsigned content refused": plain,
            "does not trust": write(tmp_path / "stranger.json", by_stranger),
            "changed after signing": write(tmp_path / "tampered.json", changed),
        }
        for reason, path in cases.items():
            result = outpost("agent", "apply", str(path), *common, cwd=tmp_path)
            assert result.returncode == 1, (reason, result.stderr)
            assert reason in result.stderr
            assert "nothing running was changed" in result.stderr
            status = json.loads((tmp_path / "state" / "status.json").read_text())
            assert status["lastDesiredStatus"]["code"] == 400
            assert reason in status["lastDesiredStatus"]["description"]
        after = json.loads(outpost("list", *state, "--json", cwd=tmp_path).stdout)["modules"]["app"]
        assert after["runtimeStatus"] == "running"
        assert after["lastStartTimeUtc"] == before["lastStartTimeUtc"]  # not restarted

        # The running agent reports a refusal in its status (lastDesiredStatus) and keeps going.
        # The running agent takes a newly signed deployment, then refuses a tampered one: the reason is
        # in its status (lastDesiredStatus) and the modules of the signed one keep running.
        second = json.loads(plain.read_text())
        second["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["app"]["env"]["V"] = {"value": "2"}
        write(tmp_path / "second.json", second)
        assert outpost("keys", "sign", str(tmp_path / "second.json"), "--sign-key", str(tmp_path / "operator.key"),
                       "-o", str(tmp_path / "live.json"), cwd=tmp_path).returncode == 0  # fmt: skip
        live = tmp_path / "live.json"
        agent = subprocess.Popen(
            [OUTPOST, "agent", "run", "--manifest", str(live), *common, "--metrics-port", "0", "--interval", "0.3"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            status_file = tmp_path / "state" / "status.json"
            running = wait_for(
                lambda: (s := json.loads(status_file.read_text()))["lastDesiredStatus"]["code"] == 200
                and s["outpost"]["deploymentId"].startswith("live@") and s,
                timeout=60, what="the second signed deployment applied",
            )  # fmt: skip
            started = running["modules"]["app"]["lastStartTimeUtc"]
            write(live, changed)
            status = wait_for(
                lambda: (s := json.loads(status_file.read_text()))["lastDesiredStatus"]["code"] == 400 and s,
                what="the refusal in status.json",
            )
            assert "changed after signing" in status["lastDesiredStatus"]["description"]
            assert status["modules"]["app"]["runtimeStatus"] == "running"
            assert status["modules"]["app"]["lastStartTimeUtc"] == started
            assert status["outpost"]["deploymentId"] != running["outpost"]["deploymentId"]  # names the refused one
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)

        # Removing the only key removes the trust root: unsigned content is accepted again.
        removed = outpost("agent", "trust", "remove", str(tmp_path / "operator.pub"), *state, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert outpost("agent", "apply", str(plain), *common, cwd=tmp_path).returncode == 0
    finally:
        Device("process", tmp_path, ns).cleanup()
