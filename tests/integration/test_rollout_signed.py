"""A signed rollout on a real ``outpost fleet serve``: devices with a trust root (simulated devices that
run the real admission code on what the fleet serves them, and the real detector) follow every step
and the promotion of a rollout started with ``outpost rollout start --sign-key``; the same rollout
without the key is refused at start, since the base deployment is signed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from integration.fleet_harness import OUTPOST, FleetProcess
from integration.test_rollout_fleet import CANDIDATE, MODEL, MODULE, PLANT_A, Device, base_deployment, push_model
from outpost.trust.admission import Admission
from outpost.trust.keys import key_id, read_public
from outpost.trust.store import TrustStore


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *map(str, args)], capture_output=True, text=True, check=False)


def test_devices_with_a_trust_root_follow_a_signed_rollout_and_an_unsigned_one_is_refused(tmp_path: Path) -> None:
    fleet = FleetProcess(tmp_path / "fleet").start()
    try:
        keys = tmp_path / "operator"
        assert _cli("keys", "generate", "-o", keys).returncode == 0
        push_model(fleet, "1", MODEL)
        push_model(fleet, "2", CANDIDATE)
        (tmp_path / "base.json").write_text(json.dumps(base_deployment(fleet)))
        access = ["--fleet", fleet.url, "--token", fleet.token]
        pushed = _cli("deploy", "push", tmp_path / "base.json", "--sign-key", f"{keys}.key", *access)
        assert pushed.returncode == 0, pushed.stderr

        trust = TrustStore(tmp_path / "device-trust")
        trust.add(read_public(keys.with_suffix(".pub")), "operator")
        admitted: list[str] = []

        def admit(manifest: dict[str, object]) -> None:
            admitted.append(Admission(trust, on_warning=lambda _: None)(manifest).key_id)  # raises if refused

        devices = [Device(fleet, f"gw-{i:02d}", tmp_path / "devices", admit) for i in range(8)]
        assert {d.round() for d in devices} == {"1"}

        start = ["rollout", "start", "motor-v2", "--target", "tags.site = 'plant-a'", "--module", MODULE,
                 "--model", "motor@2", "--steps", "50,100", "--soak", "0s", "--min-devices", "3",
                 "--gate", "min-inferences=100", *access]  # fmt: skip
        unsigned = _cli(*start)
        assert unsigned.returncode == 1
        assert f"base deployment {PLANT_A['id']!r} is signed" in unsigned.stderr
        assert "--sign-key" in unsigned.stderr
        assert fleet.client().get("/api/v1/rollouts").json() == []
        stranger = tmp_path / "stranger"
        assert _cli("keys", "generate", "-o", stranger).returncode == 0
        other = _cli(*start, "--sign-key", f"{stranger}.key")  # it never signed the base it would promote
        assert other.returncode == 1
        assert "is not signed by key" in other.stderr
        assert "nothing was started" in other.stderr
        assert fleet.client().get("/api/v1/rollouts").json() == []

        signed = _cli(*start, "--sign-key", f"{keys}.key", "--json")
        assert signed.returncode == 0, signed.stderr
        assert json.loads(signed.stdout)["signed"] is True
        shown = _cli("rollout", "status", "motor-v2", *access)
        assert shown.returncode == 0, shown.stderr
        assert "signed" in shown.stdout
        assert {d.round() for d in devices} == {"1", "2"}  # the treatment cohort admitted the signed layer

        deadline = time.monotonic() + 90
        status: dict[str, object] = {}
        while time.monotonic() < deadline and status.get("state") not in {"promoted", "rolled-back"}:
            for device in devices:
                device.round()
            status = fleet.client().get("/api/v1/rollouts/motor-v2").json()
            time.sleep(0.3)
        assert status.get("state") == "promoted", status
        assert {d.round() for d in devices} == {"2"}  # the promoted base, signed at start, admitted
        promoted = fleet.client().get(f"/api/v1/deployments/{PLANT_A['id']}+motor-v2").json()
        assert promoted["signatures"]
        assert set(admitted) == {key_id(read_public(keys.with_suffix(".pub")))}  # every round checked the parts
    except subprocess.SubprocessError as exc:  # pragma: no cover - a clearer failure
        pytest.fail(f"{exc}\n{fleet.log.read_text()}")
    finally:
        fleet.stop()
