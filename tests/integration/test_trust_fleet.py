"""Admission on the fleet path: a device given a trust root refuses the fleet's unsigned content,
keeps running what it runs, and the fleet's deployment status shows the device's reason."""

from __future__ import annotations

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
