"""The operator's commands against a real fleet: outpost device ... and outpost deploy ..., with --json."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from integration.fleet_harness import OUTPOST, REPO, FleetProcess


def _run(fleet: FleetProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_FLEET")}
    env.update(OUTPOST_FLEET_URL=fleet.url, OUTPOST_FLEET_TOKEN=token if token is not None else fleet.token)
    return subprocess.run([OUTPOST, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _json(fleet: FleetProcess, *args: str) -> Any:
    done = _run(fleet, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_operator_workflow(tmp_path: Path) -> None:
    fleet = FleetProcess(tmp_path / "fleet").start()
    try:
        key_file = tmp_path / "gw-1.key"
        added = _json(fleet, "device", "add", "gw-1", "--tag", "site=plant-a", "--tag", "role=motor-gateway",
                      "--key-file", str(key_file))  # fmt: skip
        assert added["activationKey"] is None
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        plain = _run(fleet, "device", "add", "gw-2", "--tag", "site=plant-b")
        assert plain.returncode == 0
        assert len(plain.stdout.strip()) > 20
        members = _json(fleet, "device", "list", "--target", "tags.site='plant-a'")
        assert [d["deviceId"] for d in members] == ["gw-1"]

        pushed = _json(fleet, "deploy", "push", str(REPO / "manifests/groups/plant-a.json"), "--label", "by=test")
        assert pushed["labels"]["by"] == "test"
        listed = _json(fleet, "deploy", "list")
        assert [d["id"] for d in listed] == ["plant-a-motor-monitor"]
        status = _json(fleet, "deploy", "status", "plant-a-motor-monitor")
        assert status["systemMetrics"]["targetedCount"] == 1

        retarget = _run(fleet, "deploy", "retarget", "plant-a-motor-monitor", "--target", "tags.site='plant-b'")
        assert retarget.returncode == 0, retarget.stderr
        assert _json(fleet, "deploy", "status", "plant-a-motor-monitor")["systemMetrics"]["targetedCount"] == 1
        assert [h["action"] for h in _json(fleet, "deploy", "history")] == ["push", "update"]

        tagged = _json(fleet, "device", "tag", "gw-1", "--tag", "site=plant-b", "--remove", "role")
        assert tagged["tags"] == {"site": "plant-b"}
        shown = _json(fleet, "device", "show", "gw-1")
        assert shown["assignment"]["deployments"] == ["plant-a-motor-monitor"]

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}))
        refused = _run(fleet, "deploy", "push", str(bad), "--name", "bad", "--target", "*")
        assert refused.returncode == 1
        assert "/modulesContent/$edgeAgent/properties.desired" in refused.stderr
        bad_target = _run(fleet, "deploy", "push", str(REPO / "manifests/groups/plant-a.json"), "--name", "x",
                          "--target", "tags.site = ")  # fmt: skip
        assert bad_target.returncode == 1
        assert "line 1, column" in bad_target.stderr
        assert [d["id"] for d in _json(fleet, "deploy", "list")] == ["plant-a-motor-monitor"]

        wrong = _run(fleet, "deploy", "list", token="op.YWRtaW4.wrong")
        assert wrong.returncode == 1
        assert "--token" in wrong.stderr
        assert _run(fleet, "device", "deactivate", "gw-1").returncode == 0
        assert _json(fleet, "device", "show", "gw-1")["status"] == "disabled"
        assert _run(fleet, "device", "reactivate", "gw-1").returncode == 0
        assert _run(fleet, "deploy", "delete", "plant-a-motor-monitor").returncode == 0
        assert _run(fleet, "device", "remove", "gw-2").returncode == 0
        assert [d["deviceId"] for d in _json(fleet, "device", "list")] == ["gw-1"]
    finally:
        fleet.stop()
    down = _run(fleet, "device", "list")
    assert down.returncode == 1
    assert "is `outpost fleet serve` running" in down.stderr
