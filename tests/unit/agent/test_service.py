"""The agent's composition root and its typed runtime record (runtime.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outpost.agent.environment import HubAddress
from outpost.agent.service import AgentService, AgentSettings, FileSource, NoSource, attach
from outpost.agent.state import RuntimeRecord, StateDir
from outpost.errors import InputError


def test_record_round_trips_and_tolerates_old_or_partial_files(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.runtime_record() is None
    record = RuntimeRecord("process", "ns", tmp_path, "dev1", HubAddress("hub.local", 8883))
    state.set_runtime_record(record)
    assert state.runtime_record() == record
    assert json.loads((tmp_path / "runtime.json").read_text())["hub"] == "hub.local:8883"
    state.write("runtime.json", {"kind": "docker", "namespace": "x", "workdir": "/w"})  # as test harnesses write
    assert state.runtime_record() == RuntimeRecord("docker", "x", Path("/w"))
    state.write("runtime.json", {"hub": "no-port"})
    assert state.runtime_record() == RuntimeRecord()


@pytest.mark.parametrize("text", ["", "host", "host:", ":1883", "host:x"])
def test_hub_address_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(InputError, match="HOST:PORT"):
        HubAddress.parse(text)


def test_service_records_its_runtime_and_list_attaches_to_it(tmp_path: Path) -> None:
    settings = AgentSettings(tmp_path / "state", "process", "ns", tmp_path, device_id="dev9", hub=HubAddress("h", 2))
    agent = AgentService(settings)
    assert agent.runtime.kind == "process"
    assert agent.reconciler.module_env is not None
    assert agent.reconciler.module_env("m")["OUTPOST_DEVICE_ID"] == "dev9"
    assert agent.reconciler.module_env("m")["OUTPOST_HUB_PORT"] == "2"
    attached = attach(tmp_path / "state")
    assert attached is not None
    _, runtime, record = attached
    assert (runtime.kind, runtime.namespace, record.device, record.hub) == ("process", "ns", "dev9", HubAddress("h", 2))
    assert attach(tmp_path / "nowhere") is None


def test_sources(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text('{"modulesContent": {}}')
    assert FileSource(path)() == {"modulesContent": {}}
    assert FileSource(path).name == "site"
    path.write_text("{not json")
    assert FileSource(path)() is None
    assert NoSource()() is None


class Probes:
    def __init__(self, broker: bool, ntp: str) -> None:
        self.broker, self.ntp, self.asked = broker, ntp, []

    def broker_answers(self, host: str, port: int) -> bool:
        self.asked.append((host, port))
        return self.broker

    def ntp_synchronized(self) -> str:
        return self.ntp


def test_checks_ask_the_probes(tmp_path: Path) -> None:
    from outpost.agent.diagnostics import Level, gather

    state = StateDir(tmp_path)
    probes = Probes(broker=True, ntp="no")
    checks = {c.name: c for c in gather(state, None, "no engine", "hub:1884", probes)}
    assert probes.asked == [("hub", 1884)]
    assert checks["broker"].level is Level.OK
    assert checks["clock"].level is Level.WARN
    assert checks["runtime"].level is Level.ERROR
    down = {c.name: c for c in gather(state, None, "", "nonsense", Probes(broker=True, ntp="yes"))}
    assert down["broker"].level is Level.WARN
    assert down["clock"].level is Level.OK
