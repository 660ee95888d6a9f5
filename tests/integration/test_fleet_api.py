"""The fleet service as a real process, on SQLite and on a real PostgreSQL: identities, refusals,
bad input, groups, deployments, status and the long-poll."""

from __future__ import annotations

import json
import ssl
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.fleet_harness import REPO, FleetProcess, add_device

PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
LAYER = json.loads((REPO / "manifests/layers/monitoring.json").read_text())
BASE = {"modulesContent": PLANT_A["content"]["modulesContent"]}


def _push(operator: httpx.Client, document: Any, **fields: Any) -> httpx.Response:
    return operator.post("/api/v1/deployments", json={"document": document, **fields})


def _paths(operator: httpx.Client) -> list[tuple[str, str]]:
    spec = operator.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def _fill(path: str, device: str) -> str:
    return path.replace("{device_id}", device).replace("{module_id}", "m1").replace("{deployment_id}", "d1")


def test_operator_token_is_a_0600_file_and_never_printed(fleet: FleetProcess) -> None:
    token_file = fleet.state_dir / "operator-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert fleet.token not in fleet.log.read_text()
    assert "operator-token" in fleet.log.read_text()


def test_every_endpoint_authenticates_and_a_device_reaches_only_itself(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        alpha = add_device(operator, "alpha", site="a")
        beta = add_device(operator, "beta", site="b")
        assert _push(operator, BASE, name="d1", targetCondition="*").status_code == 201
        paths = _paths(operator)
    assert len(paths) >= 15
    anonymous = fleet.client("")
    forged = fleet.client("dev.YWxwaGE.not-the-secret")
    device_a = fleet.client(alpha)
    for method, path in paths:
        if path == "/api/v1/activate":
            continue
        url = _fill(path, "beta")
        body = {} if method in {"POST", "PATCH", "PUT"} else None
        assert anonymous.request(method, url, json=body).status_code == 401, (method, path)
        assert forged.request(method, url, json=body).status_code == 401, (method, path)
        # alpha's credential on beta's documents, and on every operator route: refused
        assert device_a.request(method, url, json=body).status_code in {403, 404}, (method, path)
    assert anonymous.get("/openapi.json").status_code == 401
    # alpha reaches its own documents
    assert device_a.get("/api/v1/devices/alpha/deployment").status_code == 200
    assert device_a.patch("/api/v1/devices/alpha/modules/reported", json={"m1": {"x": 1}}).status_code == 200
    # a report is checked against the device's row in the batch that writes it: a wrong secret for alpha
    # itself, or a credential of a device that does not exist, is refused the same way, and nothing is stored
    assert forged.patch("/api/v1/devices/alpha/modules/reported", json={"m2": {"x": 1}}).status_code == 401
    ghost = fleet.client("dev.Z2hvc3Q.not-the-secret")  # "ghost"
    assert ghost.patch("/api/v1/devices/ghost/modules/reported", json={"m2": {"x": 1}}).status_code == 401
    # but cannot do what an operator does, even to itself
    assert device_a.patch("/api/v1/devices/alpha/tags", json={"site": "b"}).status_code == 403
    assert device_a.patch("/api/v1/devices/alpha/modules/m1/twin/desired", json={"x": 1}).status_code == 403
    assert device_a.put("/api/v1/devices/alpha/status", json={"status": "enabled"}).status_code == 403
    # and an operator cannot report as a device
    with fleet.client() as operator:
        assert operator.patch("/api/v1/devices/beta/modules/reported", json={"m1": {"x": 1}}).status_code == 403
        twin = operator.get("/api/v1/devices/beta").json()
    assert twin["modules"] == {}
    with fleet.client() as operator:
        assert "m2" not in operator.get("/api/v1/devices/alpha").json()["modules"]
    assert beta  # beta's own credential works for beta
    assert fleet.client(beta).get("/api/v1/devices/beta").status_code == 200


def test_bad_input_is_a_clear_4xx_and_stores_nothing(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        broken = json.loads(json.dumps(BASE))
        broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["fft-filter"]["restartPolicy"] = "x"
        refused = _push(operator, broken, name="broken", targetCondition="*")
        assert refused.status_code == 400
        pointers = [p["pointer"] for p in refused.json()["problems"]]
        assert "/modulesContent/$edgeAgent/properties.desired/modules/fft-filter/restartPolicy" in pointers

        bad_target = _push(operator, BASE, name="t", targetCondition="tags.site = 'a' AND")
        assert bad_target.status_code == 400
        assert "line 1, column" in bad_target.json()["problems"][0]["message"]

        bad_query = dict(PLANT_A, metrics={"queries": {"q": "SELECT deviceId FROM devices WHERE tags.x = "}})
        assert _push(operator, bad_query).status_code == 400

        malformed = operator.post(
            "/api/v1/deployments", content=b'{"document": {', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 422
        assert "JSON" in malformed.json()["error"]

        huge = operator.post(
            "/api/v1/deployments", content=b" " * (2 << 20), headers={"Content-Type": "application/json"}
        )
        assert huge.status_code == 413

        assert operator.post("/api/v1/devices", json={"deviceId": "no spaces/allowed"}).status_code == 400
        assert operator.get("/api/v1/devices", params={"target": "tags.("}).status_code == 400
        assert operator.patch("/api/v1/deployments/nope", json={"priority": 1}).status_code == 404

        assert operator.get("/api/v1/deployments").json() == []
        assert operator.get("/api/v1/devices").json() == []
        assert operator.get("/api/v1/history").json() == []


def test_content_is_immutable_target_priority_labels_change(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        assert _push(operator, PLANT_A).status_code == 201
        again = _push(operator, BASE, name="plant-a-motor-monitor", targetCondition="*")
        assert again.status_code == 409
        changed = operator.patch("/api/v1/deployments/plant-a-motor-monitor", json={"content": {}})
        assert changed.status_code == 409
        retarget = {"targetCondition": "tags.site = 'b'", "priority": 3, "labels": {"x": "y"}}
        updated = operator.patch("/api/v1/deployments/plant-a-motor-monitor", json=retarget)
        assert updated.status_code == 200
        shown = operator.get("/api/v1/deployments/plant-a-motor-monitor").json()
        assert (shown["targetCondition"], shown["priority"], shown["labels"]) == ("tags.site = 'b'", 3, {"x": "y"})
        assert shown["content"]["modulesContent"] == PLANT_A["content"]["modulesContent"]
        history = operator.get("/api/v1/history").json()
        assert [(h["action"], h["actor"]) for h in history] == [("push", "admin"), ("update", "admin")]


def test_groups_follow_tags_and_reported_properties(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        one = add_device(operator, "one", site="plant-a")
        add_device(operator, "two", site="plant-b")
        group = {"target": "tags.site = 'plant-a' OR properties.reported.arch = 'arm64'"}

        def members() -> list[str]:
            return [d["deviceId"] for d in operator.get("/api/v1/devices", params=group).json()]

        assert members() == ["one"]
        operator.patch("/api/v1/devices/two/tags", json={"site": "plant-a"})
        assert members() == ["one", "two"]
        operator.patch("/api/v1/devices/one/tags", json={"site": None})
        assert members() == ["two"]
        fleet.client(one).patch("/api/v1/devices/one/twin/reported", json={"arch": "arm64"})
        assert members() == ["one", "two"]


def test_effective_deployment_priority_ties_and_layers(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        credential = add_device(operator, "gw", site="plant-a", role="motor-gateway", monitoring="on")
        device = fleet.client(credential)
        assert _push(operator, PLANT_A).status_code == 201
        assert _push(operator, BASE, name="low", targetCondition="tags.site = 'plant-a'", priority=1).status_code == 201
        assert device.get("/api/v1/devices/gw/deployment").json()["deployments"] == ["plant-a-motor-monitor"]
        assert _push(operator, BASE, name="tie", targetCondition="*", priority=10).status_code == 201
        assert device.get("/api/v1/devices/gw/deployment").json()["deployments"] == ["tie"]  # newest of the tie
        assert _push(operator, LAYER, layered=True).status_code == 201
        got = device.get("/api/v1/devices/gw/deployment").json()
        assert got["deployments"] == ["tie", "monitoring-add-on"]
        assert "metrics-collector" in got["manifest"]["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
        operator.patch("/api/v1/deployments/low", json={"priority": 50})
        # laid down by priority: the layer (20) first, then the base that now outranks it (50)
        assert device.get("/api/v1/devices/gw/deployment").json()["deployments"] == ["monitoring-add-on", "low"]


def _report(device: httpx.Client, device_id: str, etag: str, code: int, description: str = "") -> None:
    status = {"lastDesiredStatus": {"code": code, "description": description}, "outpost": {"fleetEtag": etag}}
    response = device.patch(f"/api/v1/devices/{device_id}/modules/reported", json={"$edgeAgent": status})
    assert response.status_code == 200, response.text


def test_status_counts_custom_metrics_and_failing_reasons(fleet: FleetProcess) -> None:
    document = dict(
        PLANT_A,
        targetCondition="tags.site = 'plant-a'",
        metrics={"queries": {"ok": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND "
                                    "properties.reported.lastDesiredStatus.code = 200"}},
    )  # fmt: skip
    with fleet.client() as operator:
        devices = {name: fleet.client(add_device(operator, name, site="plant-a")) for name in ("a1", "a2", "a3")}
        add_device(operator, "b1", site="plant-b")
        assert _push(operator, document).status_code == 201
        etags = {n: d.get(f"/api/v1/devices/{n}/deployment").headers["ETag"].strip('"') for n, d in devices.items()}
        _report(devices["a1"], "a1", etags["a1"], 200)
        _report(devices["a2"], "a2", etags["a2"], 500, "image outpost/missing:1 not found")
        _report(devices["a3"], "a3", "an-older-etag", 200)
        status = operator.get("/api/v1/deployments/plant-a-motor-monitor/status").json()
    assert status["systemMetrics"] == {
        "targetedCount": 3,
        "appliedCount": 3,
        "reportedSuccessfulCount": 1,
        "reportedFailedCount": 1,
    }
    assert status["failing"] == [{"deviceId": "a2", "code": 500, "reason": "image outpost/missing:1 not found"}]
    assert status["pending"] == ["a3"]
    assert status["customMetrics"]["ok"]["devices"] == ["a1", "a3"]


def test_deactivated_device_is_refused_until_reactivated(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        credential = add_device(operator, "gw", site="x")
        device = fleet.client(credential)
        assert device.get("/api/v1/devices/gw/deployment").status_code == 200
        assert operator.put("/api/v1/devices/gw/status", json={"status": "disabled"}).status_code == 200
        refused = device.get("/api/v1/devices/gw/deployment")
        assert refused.status_code == 403
        assert "deactivated" in refused.json()["error"]
        assert operator.put("/api/v1/devices/gw/status", json={"status": "enabled"}).status_code == 200
        assert device.get("/api/v1/devices/gw/deployment").status_code == 200
        assert operator.delete("/api/v1/devices/gw").status_code == 204
        assert device.get("/api/v1/devices/gw/deployment").status_code == 401


def test_a_deactivated_device_is_refused_at_once_by_every_instance(tmp_path: Path, fleet_db: str | None) -> None:
    """Credentials are cached for a few seconds; deactivating still refuses the very next call, on both instances."""
    first = FleetProcess(tmp_path / "one", fleet_db).start()
    second = FleetProcess(tmp_path / "two", fleet_db or f"sqlite:///{tmp_path / 'one' / 'fleet.db'}").start()
    try:
        with first.client() as operator:
            credential = add_device(operator, "gw", site="x")
            report = {"$edgeAgent": {"lastDesiredStatus": {"code": 200}}}
            for instance in (first, second):  # each instance has checked (and cached) the credential
                device = instance.client(credential)
                assert device.get("/api/v1/devices/gw/deployment").status_code == 200
                assert device.patch("/api/v1/devices/gw/modules/reported", json=report).status_code == 200
            assert operator.put("/api/v1/devices/gw/status", json={"status": "disabled"}).status_code == 200
            for instance in (first, second):  # no wait: the very next calls
                device = instance.client(credential)
                for response in (
                    device.patch("/api/v1/devices/gw/modules/reported", json=report),
                    device.get("/api/v1/devices/gw/deployment"),
                    device.get("/api/v1/devices/gw"),
                    device.patch("/api/v1/devices/gw/twin/reported", json={"x": 1}),
                ):
                    assert response.status_code == 403, (instance.url, response.request.url, response.text)
                    assert "deactivated" in response.json()["error"]
            twin = operator.get("/api/v1/devices/gw").json()
            assert twin["modules"]["$edgeAgent"]["properties"]["reported"]["$version"] == 2  # refused: nothing stored
            assert operator.put("/api/v1/devices/gw/status", json={"status": "enabled"}).status_code == 200
            assert (
                second.client(credential).patch("/api/v1/devices/gw/modules/reported", json=report).status_code == 200
            )
            assert operator.delete("/api/v1/devices/gw").status_code == 204
            for instance in (first, second):
                assert instance.client(credential).get("/api/v1/devices/gw/deployment").status_code in (401, 404)
                refused = instance.client(credential).patch("/api/v1/devices/gw/modules/reported", json=report)
                assert refused.status_code in (401, 404)
    finally:
        second.stop()
        first.stop()


def test_worker_processes_serve_one_fleet(tmp_path: Path, fleet_db: str | None) -> None:
    """``--workers 2``: two processes on one socket, each an instance over the database; any of them answers."""
    fleet = FleetProcess(tmp_path / "fleet", fleet_db, extra=["--workers", "2"]).start()
    try:
        assert fleet.process is not None
        with fleet.client() as operator:
            credential = add_device(operator, "w1", site="x")
            assert _push(operator, BASE, name="base", targetCondition="*", priority=1).status_code == 201
            report = {"$edgeAgent": {"lastDesiredStatus": {"code": 200}}}
            answers = []
            for _ in range(6):  # a new connection each time: the kernel hands them to either worker
                with fleet.client(credential) as device:
                    answers.append(device.get("/api/v1/devices/w1/deployment").json()["deployments"])
                    assert device.patch("/api/v1/devices/w1/modules/reported", json=report).status_code == 200
            assert answers == [["base"]] * 6
            twin = operator.get("/api/v1/devices/w1").json()
            assert twin["modules"]["$edgeAgent"]["properties"]["reported"]["$version"] == 6
            assert operator.put("/api/v1/devices/w1/status", json={"status": "disabled"}).status_code == 200
            for _ in range(6):
                with fleet.client(credential) as device:
                    assert device.patch("/api/v1/devices/w1/modules/reported", json=report).status_code == 403
        assert len(_children(fleet.process.pid)) >= 2
    finally:
        fleet.stop()
    assert fleet.process.returncode is not None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            if entry.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry.parent.name))
        except (OSError, IndexError):  # ended meanwhile
            continue
    return found


def _long_poll(fleet: FleetProcess, credential: str, device_id: str, etag: str, out: dict[str, Any]) -> None:
    with fleet.client(credential) as device:
        started = time.monotonic()
        response = device.get(
            f"/api/v1/devices/{device_id}/deployment", params={"wait": 60}, headers={"If-None-Match": f'"{etag}"'},
            timeout=90,
        )  # fmt: skip
        out.update(status=response.status_code, seconds=time.monotonic() - started, body=response.json())


def test_a_push_reaches_a_waiting_device_through_another_instance(tmp_path: Path, fleet_db: str | None) -> None:
    """Two instances on one database (PostgreSQL) or one instance (SQLite): the long-poll answers on push."""
    first = FleetProcess(tmp_path / "one", fleet_db).start()
    second = FleetProcess(tmp_path / "two", fleet_db).start() if fleet_db else first
    try:
        token = first.token
        if fleet_db:
            assert not (second.state_dir / "operator-token").exists()  # one operator per fleet, made once
        with first.client(token) as operator:
            credential = add_device(operator, "gw", site="plant-a")
            etag = fleet_client_etag(second, credential, "gw")
            result: dict[str, Any] = {}
            waiter = threading.Thread(target=_long_poll, args=(second, credential, "gw", etag, result))
            waiter.start()
            time.sleep(1.0)
            assert not result, "the long-poll answered before anything changed"
            pushed = time.monotonic()
            assert _push(operator, BASE, name="to-all", targetCondition="tags.site = 'plant-a'").status_code == 201
            waiter.join(timeout=60)
        assert result["status"] == 200
        assert result["body"]["deployments"] == ["to-all"]
        assert time.monotonic() - pushed < 30  # well inside the 60 s wait: woken by the push, not the timeout
    finally:
        second.stop()
        first.stop()


def fleet_client_etag(fleet: FleetProcess, credential: str, device_id: str) -> str:
    with fleet.client(credential) as device:
        return device.get(f"/api/v1/devices/{device_id}/deployment").headers["ETag"].strip('"')


def test_metrics_for_operators_only(fleet: FleetProcess) -> None:
    with fleet.client() as operator:
        credential = add_device(operator, "gw")
        text = operator.get("/metrics").text
    assert "outpost_fleet_requests_total" in text
    assert fleet.client(credential).get("/metrics").status_code == 403


@pytest.mark.parametrize("fleet_db", ["sqlite"], indirect=True)
def test_tls_with_certificate_and_key(tmp_path: Path, fleet_db: str | None) -> None:
    from integration.fleet_certs import self_signed

    cert, key = self_signed(tmp_path)
    process = FleetProcess(
        tmp_path / "fleet",
        None,
        extra=["--cert", str(cert), "--key", str(key)],
        scheme="https",
        verify=ssl.create_default_context(cafile=str(cert)),
    ).start()
    try:
        with process.client() as operator:
            assert operator.get("/api/v1/devices").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(process.url + "/api/v1/devices", verify=True, timeout=5)
    finally:
        process.stop()
