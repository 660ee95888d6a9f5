"""The console's pure parts over a real SQLite store: sessions, what the pages show, escaping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.console import views
from outpost.fleet.console.render import render
from outpost.fleet.console.session import csrf_token, make_session, session_name, verify_session
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ForbiddenError, InvalidError
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
    listing = views.device_list(service, OPERATOR, query="site=b")
    assert [r["twin"]["deviceId"] for r in listing["rows"]] == ["b1"]
    assert views.device_list(service, OPERATOR, state="never")["total"] == 1
    paged = views.device_list(service, OPERATOR, per_page=1, page=9)
    assert (paged["page"], paged["pages"], len(paged["rows"])) == (2, 2, 1)


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
