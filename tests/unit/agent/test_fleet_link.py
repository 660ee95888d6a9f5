"""The agent's fleet link with a fake fleet API: assignments kept on disk, reports coalesced, offline first."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from outpost.agent.fleet_link import AGENT, DEVICE, FleetLink, LinkSettings, Outbox, top_level_diff
from outpost.agent.state import deployment_hash
from outpost.backoff import Backoff
from outpost.wire.fleet import Unreachable

MANIFEST = {"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {}}}}}


class FakeFleet:
    """Records calls; ``down`` makes every call fail as an outage would."""

    def __init__(self) -> None:
        self.down = False
        self.assignment: tuple[str, dict[str, Any] | None] = ("e1", {"deployments": ["d"], "manifest": MANIFEST})
        self.modules: list[dict[str, Any]] = []
        self.device: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise Unreachable("cannot reach the fleet at http://127.0.0.1:1: connection refused")

    def fetch_deployment(self, _device_id: str, etag: str | None, _wait: float) -> tuple[str, dict[str, Any] | None]:
        self._check()
        new_etag, body = self.assignment
        return (new_etag, None) if etag == new_etag else (new_etag, body)

    def report_modules(self, _device_id: str, patches: Mapping[str, Mapping[str, Any]]) -> None:
        self._check()
        self.modules.append(json.loads(json.dumps(patches)))

    def report_device(self, _device_id: str, patch: Mapping[str, Any]) -> None:
        self._check()
        self.device.append(dict(patch))


def _link(tmp_path: Path, fleet: FakeFleet, status: dict[str, Any] | None = None) -> FleetLink:
    twins = tmp_path / "hub" / "twins"
    twins.mkdir(parents=True, exist_ok=True)
    settings = LinkSettings("gw", tmp_path / "agent", hub_twins=twins, backoff=Backoff(0.01, 0.05, jitter=0.5))
    return FleetLink(fleet, settings, status=lambda: status)


def test_an_assignment_is_the_agents_source_and_survives_a_restart(tmp_path: Path) -> None:
    fleet = FakeFleet()
    link = _link(tmp_path, fleet)
    assert link() is None  # nothing known yet: the agent keeps what it runs
    assert link.fetch_once(0)
    assert link() == MANIFEST
    assert not link.fetch_once(0)  # same ETag: nothing new
    fleet.down = True
    rebooted = _link(tmp_path, fleet)
    assert rebooted() == MANIFEST
    assert rebooted.etag == "e1"


def test_agent_status_names_the_etag_it_describes(tmp_path: Path) -> None:
    fleet = FakeFleet()
    status = {
        "lastDesiredStatus": {"code": 200},
        "outpost": {"deploymentId": f"fleet@{deployment_hash(MANIFEST)}", "reportedAtUtc": "t"},
    }
    link = _link(tmp_path, fleet, status)
    link.fetch_once(0)
    link.collect()
    link.report_once()
    sent = fleet.modules[-1][AGENT]
    assert sent["outpost"]["fleetEtag"] == "e1"
    assert "reportedAtUtc" not in sent["outpost"]
    assert fleet.device[-1]["arch"]
    status["outpost"]["deploymentId"] = "fleet@0000"  # an older deployment: no ETag claimed
    link.collect()
    link.report_once()
    assert fleet.modules[-1][AGENT]["outpost"]["fleetEtag"] is None


def test_reports_wait_offline_coalesced_and_go_when_the_link_returns(tmp_path: Path) -> None:
    fleet = FakeFleet()
    link = _link(tmp_path, fleet, {"lastDesiredStatus": {"code": 200}})
    twins = tmp_path / "hub" / "twins"
    fleet.down = True
    for value in range(50):
        (twins / "reported-sensor.json").write_text(json.dumps({"count": value, "unit": "C"}))
        link.collect()
        with pytest.raises(Unreachable):
            link.report_once()
    assert len(link.outbox) == 3  # $edgeAgent, $device, sensor: one document each, however many rounds
    rebooted = _link(tmp_path, fleet, {"lastDesiredStatus": {"code": 200}})  # offline reboot keeps them
    fleet.down = False
    assert rebooted.report_once() == 3
    assert fleet.modules[-1]["sensor"] == {"count": 49, "unit": "C"}
    assert len(rebooted.outbox) == 0
    # only what changed is sent next time, and nothing when nothing changed
    (twins / "reported-sensor.json").write_text(json.dumps({"count": 50}))
    rebooted.collect()
    rebooted.report_once()
    assert fleet.modules[-1] == {"sensor": {"count": 50, "unit": None}}
    rebooted.collect()
    assert rebooted.report_once() == 0


def test_the_loops_back_off_while_the_fleet_is_away_and_resume(tmp_path: Path) -> None:
    fleet = FakeFleet()
    fleet.down = True
    link = _link(tmp_path, fleet, {"lastDesiredStatus": {"code": 200}})
    stop = threading.Event()
    link.start(stop)
    try:
        threading.Event().wait(0.3)
        assert link.fetch_failures > 1
        assert not link.connected.is_set()
        fleet.down = False
        assert link.connected.wait(5)
        for _ in range(100):
            if link() == MANIFEST and fleet.modules:
                break
            threading.Event().wait(0.05)
        assert link() == MANIFEST
        assert fleet.modules
    finally:
        stop.set()
        link.join(5)


def test_outbox_and_diff(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put("m", {"a": 1})
    box.sent({"m": {"a": 1}})
    box.put("m", {"a": 1})
    assert len(box) == 0
    assert top_level_diff({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"b": None, "c": 3}
    assert DEVICE.startswith("$")
