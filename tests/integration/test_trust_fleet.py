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
from outpost.agent.adapters import make_runtime


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


def _stored(agent: Agent, name: str) -> dict[str, Any]:
    path = agent.state / name
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _threshold(agent: Agent) -> Any:
    document = _stored(agent, "deployment.json").get("document", {})
    return document.get("modulesContent", {}).get("idle", {}).get("properties.desired", {}).get("threshold")


def _agent_reported(operator: httpx.Client, device_id: str) -> dict[str, Any]:
    twin = operator.get(f"/api/v1/devices/{device_id}").json()
    return dict(twin["modules"].get("$edgeAgent", {}).get("properties", {}).get("reported", {}))


def test_module_desired_properties_set_on_one_device_are_applied_only_when_signed(
    tmp_path: Path, fleet_db: str | None
) -> None:
    """`device twin --set --sign-key`: the trust-rooted device applies the signed override; an unsigned one
    is refused with the reason in its status (and at the fleet) while what runs keeps running; signing
    the same value again (a new version) is applied. On SQLite and PostgreSQL (migration 0006)."""
    fleet = FleetProcess(tmp_path / "fleet", fleet_db).start()
    agent: Agent | None = None
    keys = tmp_path / "operator"
    try:
        assert _cli("keys", "generate", "-o", keys).returncode == 0
        with fleet.client() as operator:
            added = operator.post("/api/v1/devices", json={"deviceId": "d1", "tags": {}})
            assert added.status_code == 201, added.text
            trusted = _cli("agent", "trust", "add", f"{keys}.pub", "--state-dir", tmp_path / "d1" / "agent")
            assert trusted.returncode == 0, trusted.stderr
            agent = Agent(tmp_path / "d1", "d1", fleet.url, added.json()["activationKey"])
            base = _content({"idle": module(order=1)})
            base["modulesContent"]["idle"] = {"properties.desired": {"threshold": 1}}
            (tmp_path / "base.json").write_text(json.dumps(base))
            at = ["--fleet", fleet.url, "--token", fleet.token]
            pushed = _cli("deploy", "push", tmp_path / "base.json", "--name", "base", "--target", "*",
                          "--sign-key", f"{keys}.key", *at)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
            wait_for(lambda: _settled(operator, "base", 1), CONVERGE, "the signed base on d1")
            assert _threshold(agent) == 1
            runtime = make_runtime("process", state_dir=agent.state, namespace=agent.namespace, workdir=agent.root)
            idle = runtime.observe().modules["idle"].id

            twin = ["device", "twin", "d1", "--module", "idle", *at]
            no_key = _cli(*twin, "--set", "threshold=7", "--sign-key", tmp_path / "missing.key")
            assert no_key.returncode == 1
            assert "cannot read the key file" in no_key.stderr
            assert "nothing was set" in no_key.stderr
            signed = _cli(*twin, "--set", "threshold=7", "--sign-key", f"{keys}.key")
            assert signed.returncode == 0, signed.stderr
            assert json.loads(signed.stdout)["desiredSignatures"][0]["alg"] == "Ed25519"
            wait_for(lambda: _threshold(agent) == 7, CONVERGE, "the signed override applied on d1")
            wait_for(lambda: _stored(agent, "status.json")["lastDesiredStatus"]["code"] == 200, CONVERGE, "d1 at 200")

            unsigned = _cli(*twin, "--set", "threshold=8")
            assert unsigned.returncode == 0, unsigned.stderr  # the fleet takes it: devices without trust run it

            def refused() -> dict[str, Any] | None:
                status = _stored(agent, "status.json")
                return status if status.get("lastDesiredStatus", {}).get("code") == 400 else None

            status: dict[str, Any] = wait_for(refused, CONVERGE, "the unsigned override refused by d1")
            reason = "the desired properties set on the fleet for module 'idle' (version 2) are unsigned"
            assert reason in status["lastDesiredStatus"]["description"]
            assert reason in status["outpost"]["refusal"]["reason"]
            assert status["outpost"]["refusal"]["source"] == "fleet"
            assert _threshold(agent) == 7  # still what it accepted
            assert runtime.observe().modules["idle"].id == idle  # kept running, never restarted
            assert "idle" in agent.running()
            wait_for(lambda: _agent_reported(operator, "d1").get("lastDesiredStatus", {}).get("code") == 400,
                     CONVERGE, "the refusal at the fleet")  # fmt: skip
            assert reason in _agent_reported(operator, "d1")["outpost"]["refusal"]["reason"]

            # the same value signed (version 3): applied, the refusal gone
            resigned = _cli(*twin, "--set", "threshold=8", "--sign-key", f"{keys}.key")
            assert resigned.returncode == 0, resigned.stderr
            wait_for(lambda: _threshold(agent) == 8, CONVERGE, "the re-signed override applied on d1")
            status = wait_for(
                lambda: (s := _stored(agent, "status.json"))["lastDesiredStatus"]["code"] == 200 and s,
                CONVERGE,
                "d1 back at 200",
            )
            assert "refusal" not in status["outpost"]
            assert runtime.observe().modules["idle"].id == idle
    except httpx.HTTPError as exc:  # pragma: no cover - a clearer failure than a bare transport error
        raise AssertionError(f"fleet API: {exc}\n{fleet.log.read_text()}") from exc
    finally:
        if agent is not None:
            agent.stop()
        fleet.stop()
