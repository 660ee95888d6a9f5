"""Incremental status counts (stored rows per deployment and device) agree with one pass over every device.

Every kind of change that moves a count — a device added, tagged, reporting, deactivated, removed;
an operator's desired property; a push, a retarget, a delete — is made through the service on a
real SQLite store, and after each one every deployment's status document is compared with the
reference: :func:`outpost.fleet.status.deployment_status` over all devices at once.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.fleet.adapters import database
from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ForbiddenError
from outpost.fleet.models import DeviceStatus
from outpost.fleet.resolution import target
from outpost.fleet.service import FleetService, PushRequest
from outpost.fleet.status import deployment_status

REPO = Path(__file__).resolve().parents[3]
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
LAYER = json.loads((REPO / "manifests/layers/monitoring.json").read_text())
CONTENT = {"modulesContent": PLANT_A["content"]["modulesContent"]}
OPERATOR = Principal(Kind.OPERATOR, "admin")
SITES = ["a", "b", "c"]


@pytest.fixture(params=[database.RECOUNT_CHUNK, 2], ids=["chunk-default", "chunk-2"])
def service(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FleetService]:
    """A service on SQLite; with ``chunk-2`` every recount runs in transactions of two devices."""
    monkeypatch.setattr(database, "RECOUNT_CHUNK", request.param)
    store = SqlStore.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield FleetService(store)
    store.close()


def reference(service: FleetService) -> dict[str, dict[str, Any]]:
    """Every deployment's status from one pass over every device (what counting did before rows)."""
    resolver = service.resolver()
    modules: dict[str, list[Any]] = {}
    for twin in service.store.module_twins():
        modules.setdefault(twin.device_id, []).append(twin)
    views = [service._view(resolver, d, modules.get(d.id, [])) for d in service.store.devices()]
    return {
        r.id: deployment_status(r, views, [target(r.target)(v.twin) for v in views])
        for r in service.deployments(OPERATOR)
    }


def agree(service: FleetService) -> None:
    expected = reference(service)
    assert service.statuses(OPERATOR) == expected
    assert service.system_metrics(OPERATOR) == {k: v["systemMetrics"] for k, v in expected.items()}


def report(service: FleetService, device_id: str, code: int, etag: str | None = None) -> None:
    assignment = service.assignment(OPERATOR, device_id)
    status = {"code": code, "description": "image outpost/missing:1 not found" if code == 500 else ""}
    link = {"fleetEtag": etag or assignment.etag, "converging": False}
    patch = {"$edgeAgent": {"lastDesiredStatus": status, "outpost": link}}
    service.report_modules(Principal(Kind.DEVICE, device_id), device_id, patch)


def test_counts_follow_every_kind_of_change(service: FleetService) -> None:
    ok = "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND " \
         "properties.reported.lastDesiredStatus.code = 200"  # fmt: skip
    metrics = {"metrics": {"queries": {"ok": ok}}}
    for i in range(12):
        service.add_device(OPERATOR, f"d{i:02d}", {"site": SITES[i % 3], "ring": i % 4})
    agree(service)  # no deployments: nothing counted
    service.push(OPERATOR, PushRequest({**CONTENT, **metrics}, name="base", target="*", priority=1))
    service.push(OPERATOR, PushRequest(CONTENT, name="site-a", target="tags.site = 'a'", priority=5))
    service.push(OPERATOR, PushRequest(LAYER, name="layer", target="tags.ring >= 2", layered=True))
    agree(service)
    for i in range(0, 12, 2):
        report(service, f"d{i:02d}", 200)
    report(service, "d01", 500)
    report(service, "d03", 200, etag="stale")  # reports on an older assignment: pending
    agree(service)
    service.patch_tags(OPERATOR, "d00", {"site": "b"})  # leaves site-a: its report is on the old assignment
    service.report_device(Principal(Kind.DEVICE, "d04"), "d04", {"x": 1})
    agree(service)
    module = next(iter(CONTENT["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]))
    service.set_module_desired(OPERATOR, "d02", module, {"threshold": 3})  # moves d02's ETag: pending again
    agree(service)
    service.update(OPERATOR, "site-a", {"targetCondition": "tags.site = 'b'"})
    agree(service)
    for i in range(12):
        report(service, f"d{i:02d}", 200 if i % 5 else 500)
    agree(service)
    service.set_status(OPERATOR, "d05", DeviceStatus.DISABLED)
    service.remove_device(OPERATOR, "d06")
    service.add_device(OPERATOR, "d12", {"site": "a", "ring": 3})
    service.delete(OPERATOR, "layer")
    agree(service)
    status = service.status(OPERATOR, "base")
    assert status["systemMetrics"]["targetedCount"] == 12
    assert status["customMetrics"]["ok"]["count"] > 0
    assert {f["deviceId"] for f in status["failing"]} <= {"d00", "d05", "d10", "d01"}


def test_counts_survive_random_interleavings(service: FleetService) -> None:
    rng = random.Random(14)
    service.push(OPERATOR, PushRequest(CONTENT, name="base", target="*", priority=1))
    service.push(OPERATOR, PushRequest(CONTENT, name="ring", target="tags.ring >= 2", priority=3))
    alive: list[str] = []
    for step in range(60):
        action = rng.choice(["add", "tag", "report", "report", "report", "count", "retarget", "status"])
        if action == "add" or not alive:
            alive.append(f"r{step:02d}")
            service.add_device(OPERATOR, alive[-1], {"ring": rng.randrange(4)})
        elif action == "tag":
            service.patch_tags(OPERATOR, rng.choice(alive), {"ring": rng.randrange(4)})
        elif action == "report":
            with contextlib.suppress(ForbiddenError):  # a deactivated device is refused, and nothing counts it
                report(service, rng.choice(alive), rng.choice([200, 200, 500, 406]))
        elif action == "retarget":
            service.update(OPERATOR, "ring", {"targetCondition": f"tags.ring >= {rng.randrange(4)}"})
        elif action == "status":
            service.set_status(OPERATOR, rng.choice(alive), rng.choice(list(DeviceStatus)))
        if action == "count" or step % 10 == 9:
            agree(service)
    agree(service)


def test_a_pruned_change_feed_counts_everything_again(service: FleetService) -> None:
    service.push(OPERATOR, PushRequest(CONTENT, name="base", target="*", priority=1))
    service.add_device(OPERATOR, "p1", {})
    agree(service)
    service.add_device(OPERATOR, "p2", {})
    service.store.prune_changes(-1.0)  # the change naming p2 is gone before anyone counted it
    agree(service)
    assert service.status(OPERATOR, "base")["systemMetrics"]["targetedCount"] == 2


def test_a_device_removed_while_the_feed_was_pruned_is_counted_nowhere(service: FleetService) -> None:
    service.push(OPERATOR, PushRequest(CONTENT, name="base", target="*", priority=1))
    for name in ("q1", "q2", "q3"):
        service.add_device(OPERATOR, name, {})
    agree(service)
    service.remove_device(OPERATOR, "q2")
    service.store.prune_changes(-1.0)  # nobody counted the removal, and the feed no longer names it
    agree(service)
    assert service.status(OPERATOR, "base")["systemMetrics"]["targetedCount"] == 2


def test_counts_agree_after_changes_made_while_a_recount_runs(service: FleetService) -> None:
    """A recount in one thread (in chunks of two devices with the chunk-2 store) while another thread
    tags, reports, deactivates and pushes: once both are done, one more count agrees with a full pass."""
    for i in range(30):
        service.add_device(OPERATOR, f"c{i:02d}", {"ring": i % 4})
    service.push(OPERATOR, PushRequest(CONTENT, name="base", target="*", priority=1))
    rng = random.Random(17)
    failures: list[BaseException] = []

    def change() -> None:
        try:
            for step in range(40):
                device = f"c{rng.randrange(30):02d}"
                action = rng.choice(["tag", "report", "report", "status"])
                if step == 20:
                    service.push(OPERATOR, PushRequest(CONTENT, name="ring", target="tags.ring >= 2", priority=3))
                elif action == "tag":
                    service.patch_tags(OPERATOR, device, {"ring": rng.randrange(4)})
                elif action == "report":
                    with contextlib.suppress(ForbiddenError):
                        report(service, device, rng.choice([200, 500]))
                else:
                    service.set_status(OPERATOR, device, rng.choice(list(DeviceStatus)))
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)

    changer = threading.Thread(target=change)
    changer.start()
    while changer.is_alive():
        service.count()
    changer.join()
    assert not failures
    agree(service)
