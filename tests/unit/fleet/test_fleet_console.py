"""The console's pure parts over a real SQLite store: sessions, what the pages show, escaping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.fleet.adapters.console_store import SqlConsoleStore
from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.console import views
from outpost.fleet.console.render import render
from outpost.fleet.console.session import csrf_token, make_session, session_name, verify_session
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ForbiddenError, InvalidError
from outpost.fleet.models import DeviceStatus
from outpost.fleet.service import FleetService, PushRequest

REPO = Path(__file__).resolve().parents[3]
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
CONTENT = {"modulesContent": PLANT_A["content"]["modulesContent"]}
OPERATOR = Principal(Kind.OPERATOR, "admin")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FleetService]:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield FleetService(store)
    store.close()


def test_a_session_is_bound_to_the_operator_hash_and_expires() -> None:
    cookie = make_session("admin", "hash-1", now=1000.0)
    assert session_name(cookie) == "admin"
    assert verify_session(cookie, "hash-1", now=1001.0)
    assert not verify_session(cookie, "hash-2", now=1001.0)  # a new operator token ends every session
    assert not verify_session(cookie, None, now=1001.0)
    assert not verify_session(cookie, "hash-1", now=1000.0 + 13 * 3600)
    name, expiry, nonce, mac = cookie.split(".")
    assert not verify_session(f"{name}.{int(expiry) + 99}.{nonce}.{mac}", "hash-1", now=1001.0)
    assert not verify_session("garbage", "hash-1")
    assert not verify_session(f"{name}.{expiry}.{nonce}.\u00e9\u00e9", "hash-1", now=1001.0)  # non-ASCII: refused
    assert session_name("a.b") is None
    assert csrf_token(cookie, "hash-1") != csrf_token(make_session("admin", "hash-1"), "hash-1")


def test_check_push_stores_nothing_and_a_device_cannot_check(service: FleetService) -> None:
    record = service.check_push(OPERATOR, PushRequest(CONTENT, name="d1", target="*"))
    assert record.id == "d1"
    assert service.deployments(OPERATOR) == []
    with pytest.raises(InvalidError) as caught:
        service.check_push(OPERATOR, PushRequest({"modulesContent": {}}, name="d1", target="*"))
    assert any(p.pointer.startswith("/modulesContent") for p in caught.value.problems)
    with pytest.raises(ForbiddenError):
        service.check_push(Principal(Kind.DEVICE, "gw"), PushRequest(CONTENT, name="d1", target="*"))


def test_pages_agree_with_the_service(service: FleetService) -> None:
    service.add_device(OPERATOR, "a1", {"site": "a"})
    service.add_device(OPERATOR, "b1", {"site": "b"})
    service.push(OPERATOR, PushRequest(CONTENT, name="d1", target="tags.site = 'a'"))
    service.report_modules(Principal(Kind.DEVICE, "a1"), "a1", {"$edgeAgent": {"modules": {"motor-sensor": {
        "runtimeStatus": "backoff", "restartCount": 2, "statusDescription": "no such image"}}}})  # fmt: skip
    page = views.overview(service, OPERATOR)
    assert page["groups"][0]["counts"] == {"online": 1, "offline": 0, "never": 1}
    assert page["groups"][1]["counts"] == {"online": 1, "offline": 0, "never": 0}
    assert page["deployments"][0]["metrics"] == service.status(OPERATOR, "d1")["systemMetrics"]
    device = views.device_page(service, OPERATOR, "a1")
    sensor = next(m for m in device["modules"] if m["name"] == "motor-sensor")
    assert sensor == {**sensor, "origin": "d1", "runtimeStatus": "backoff", "restartCount": 2,
                      "lastError": "no such image"}  # fmt: skip
    assert isinstance(service.store, SqlStore)
    index = SqlConsoleStore(service.store.engine)
    listing = views.device_list(index, OPERATOR, query="site=b")
    assert [r["twin"]["deviceId"] for r in listing["rows"]] == ["b1"]
    assert views.device_list(index, OPERATOR, state="never")["total"] == 1
    paged = views.device_list(index, OPERATOR, per_page=1, page=9)
    assert (paged["page"], paged["pages"], len(paged["rows"])) == (2, 2, 1)
    with pytest.raises(ForbiddenError):
        views.device_list(index, Principal(Kind.DEVICE, "a1"))


def test_device_search_by_id_tag_and_state_pages_in_the_database(service: FleetService) -> None:
    for i in range(25):
        service.add_device(OPERATOR, f"gw-{i:02d}", {"site": f"Plant-{i % 3}", "ring": i % 2, "odd key": "x_y%"})
    service.add_device(OPERATOR, "other", {"note": "gw-00 spare"})
    service.set_status(OPERATOR, "gw-03", DeviceStatus.DISABLED)
    service.report_modules(Principal(Kind.DEVICE, "gw-04"), "gw-04", {"m": {"x": 1}})
    assert isinstance(service.store, SqlStore)
    index = SqlConsoleStore(service.store.engine)

    def ids(**kwargs: Any) -> list[str]:
        page = views.device_list(index, OPERATOR, per_page=100, **kwargs)
        assert page["total"] == len(page["rows"])
        return [r["twin"]["deviceId"] for r in page["rows"]]

    assert ids(query="gw-0") == [f"gw-0{i}" for i in range(10)] + ["other"]  # the id, or a tag, contains it
    assert ids(query="site=plant-1") == [f"gw-{i:02d}" for i in range(1, 25, 3)]  # a tag, case-insensitive
    assert ids(query="ring=1")[:2] == ["gw-01", "gw-03"]
    assert ids(query="odd key=x_y%") == ids(query="site=plant")  # LIKE wildcards are literal
    assert len(ids(query="site=plant")) == 25
    assert ids(query="odd key=xay") == []
    assert ids(query="gw-%") == []
    assert ids(query="nothing=here") == []
    assert ids(query='we"ird\\key=1') == []
    assert ids(state="disabled") == ["gw-03"]
    assert ids(state="online") == ["gw-04"]
    assert ids(state="offline") == []
    assert len(ids(state="never")) == 25
    assert ids(query="site=plant-1", state="online") == ["gw-04"]
    assert ids(state="bogus") == ids()  # an unknown state filters nothing
    last = views.device_list(index, OPERATOR, page=99, per_page=10)
    assert (last["page"], last["pages"], [r["twin"]["deviceId"] for r in last["rows"]]) == (3, 3, [
        "gw-20", "gw-21", "gw-22", "gw-23", "gw-24", "other"])  # fmt: skip
    assert last["rows"][0]["connection"] == "never"


def test_desired_and_reported_differences_are_marked(service: FleetService) -> None:
    service.add_device(OPERATOR, "a1", {})
    service.set_module_desired(OPERATOR, "a1", "m1", {"threshold": 3, "same": 1})
    service.report_modules(Principal(Kind.DEVICE, "a1"), "a1", {"m1": {"threshold": 2, "same": 1, "extra": True}})
    rows = {r["path"]: r for c in views.device_page(service, OPERATOR, "a1")["comparisons"] for r in c["rows"]}
    assert rows["threshold"]["differs"]
    assert not rows["same"]["differs"]
    assert not rows["extra"]["differs"]
    assert views.flatten({"a": {"b": 1, "$version": 4}, "c": []}) == {"a.b": 1, "c": []}


def test_templates_escape_user_text() -> None:
    html = render("error.html", who=OPERATOR, csrf="t", nonce="n", status=404, message="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
