"""Admission on the fleet path: a device given a trust root refuses the fleet's unsigned content,
keeps running what it runs, and the fleet's deployment status shows the device's reason."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx

from integration.agent_harness import module, wait_for
from integration.fleet_harness import OUTPOST, FleetProcess
from integration.test_fleet_e2e import CONVERGE, Agent, _content, _push, _settled, _status


def test_a_trust_root_refuses_the_fleets_unsigned_content(tmp_path: Path) -> None:
    fleet = FleetProcess(tmp_path / "fleet").start()
    agent: Agent | None = None
    try:
        with fleet.client() as operator:
            added = operator.post("/api/v1/devices", json={"deviceId": "d1", "tags": {"site": "mine"}})
            assert added.status_code == 201, added.text
            agent = Agent(tmp_path / "d1", "d1", fleet.url, added.json()["activationKey"])
            _push(operator, "base", _content({"idle": module(order=1)}), "*", 1)
            wait_for(lambda: _settled(operator, "base", 1), CONVERGE, "base on d1 (no trust root yet)")

            keys = tmp_path / "operator"
            assert subprocess.run([OUTPOST, "keys", "generate", "-o", str(keys)], check=False).returncode == 0
            trusted = subprocess.run([OUTPOST, "agent", "trust", "add", f"{keys}.pub", "--state-dir", str(agent.state)],
                                     capture_output=True, text=True, check=False)  # fmt: skip
            assert trusted.returncode == 0, trusted.stderr

            _push(operator, "next", _content({"idle": module(order=1), "more": module(order=2)}), "*", 2)
            status: dict[str, Any] = wait_for(
                lambda: _settled(operator, "next", 0, failed=1), CONVERGE, "next reported refused by d1"
            )
            assert status["failing"][0]["deviceId"] == "d1"
            assert "unsigned content refused" in status["failing"][0]["reason"]
            assert "more" not in agent.running()
            assert "idle" in agent.running()
            assert _status(operator, "next")["systemMetrics"]["reportedSuccessfulCount"] == 0
    except httpx.HTTPError as exc:  # pragma: no cover - a clearer failure than a bare transport error
        raise AssertionError(f"fleet API: {exc}\n{fleet.log.read_text()}") from exc
    finally:
        if agent is not None:
            agent.stop()
        fleet.stop()


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *map(str, args)], capture_output=True, text=True, check=False)


def test_signed_deployments_run_and_a_tampered_fleet_row_is_refused(tmp_path: Path) -> None:
    """`deploy push --sign-key`: the device checks every signed part and their composition; a fleet
    database row changed after the push is refused, and the device keeps running what it runs."""
    fleet = FleetProcess(tmp_path / "fleet").start()
    agent: Agent | None = None
    keys = tmp_path / "operator"
    try:
        assert _cli("keys", "generate", "-o", keys).returncode == 0
        with fleet.client() as operator:
            added = operator.post("/api/v1/devices", json={"deviceId": "d1", "tags": {"site": "ship"}})
            assert added.status_code == 201, added.text
            trusted = _cli("agent", "trust", "add", f"{keys}.pub", "--state-dir", tmp_path / "d1" / "agent")
            assert trusted.returncode == 0, trusted.stderr
            agent = Agent(tmp_path / "d1", "d1", fleet.url, added.json()["activationKey"])
            push = ["--fleet", fleet.url, "--token", fleet.token, "--sign-key", f"{keys}.key", "--target", "*"]
            files = {
                "base": _content({"idle": module(order=1)}),
                "layer": {"modulesContent": {"$edgeAgent": {"properties.desired.modules.more": module(order=2)}}},
                "nudge": {"modulesContent": {"$edgeAgent": {"properties.desired.modules.third": module(order=3)}}},
            }
            for name, document in files.items():
                (tmp_path / f"{name}.json").write_text(json.dumps(document))
            pushed = _cli("deploy", "push", tmp_path / "base.json", "--name", "base", "--priority", "1", *push)
            assert pushed.returncode == 0, pushed.stderr
            assert "signed" in pushed.stderr
            pushed = _cli("deploy", "push", tmp_path / "layer.json", "--name", "layer", "--layered", "--priority", "2",
                          *push)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
            wait_for(lambda: _settled(operator, "layer", 1), CONVERGE, "base + signed layer on d1")
            assert {"idle", "more"} <= agent.running()

            # someone with the fleet's database changes the layer's stored content after the push
            changed = json.loads(json.dumps(files["layer"]["modulesContent"]))
            changed["$edgeAgent"]["properties.desired.modules.more"]["outpost"]["process"]["env"] = {"EVIL": "1"}
            with sqlite3.connect(tmp_path / "fleet" / "fleet.db") as db:
                db.execute("UPDATE deployments SET content = ? WHERE id = 'layer'", (json.dumps(changed),))
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'deployments'")
            pushed = _cli("deploy", "push", tmp_path / "nudge.json", "--name", "nudge", "--layered", "--priority", "3",
                          *push)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
            status: dict[str, Any] = wait_for(
                lambda: _settled(operator, "nudge", 0, failed=1), CONVERGE, "the tampered composition refused by d1"
            )
            reason = status["failing"][0]["reason"]
            assert "deployment 'layer'" in reason
            assert "changed after signing" in reason
            assert "third" not in agent.running()
            assert {"idle", "more"} <= agent.running()
            document = json.loads((agent.state / "status.json").read_text())
            assert "changed after signing" in document["lastDesiredStatus"]["description"]
    except httpx.HTTPError as exc:  # pragma: no cover - a clearer failure than a bare transport error
        raise AssertionError(f"fleet API: {exc}\n{fleet.log.read_text()}") from exc
    finally:
        if agent is not None:
            agent.stop()
        fleet.stop()
