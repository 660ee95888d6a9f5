"""The fleet console in a real headless Chromium (Debian's, driven by Playwright) against a real
``outpost fleet serve``: devices are added through the API and report through the device API as an
agent would. The tests save screenshots of the main pages into ``docs/console/``.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from integration.fleet_harness import REPO, FleetProcess, add_device, fleet, fleet_db, postgres_cluster

__all__ = ["fleet", "fleet_db", "postgres_cluster"]

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "docs" / "console"
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
CONTENT = {"modulesContent": PLANT_A["content"]["modulesContent"]}
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    done = subprocess.run([str(REPO / "scripts/services/chromium.sh")], capture_output=True, text=True, check=False,
                          timeout=900)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"scripts/services/chromium.sh failed:\n{done.stdout}\n{done.stderr}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    process = FleetProcess(tmp_path_factory.mktemp("console") / "fleet").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(context: BrowserContext, fleet: FleetProcess, path: str = "/") -> Page:
    page = context.new_page()
    page.goto(fleet.url + path)
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#token", fleet.token)
    page.click("#sign-in")
    page.wait_for_url(re.compile(re.escape(fleet.url + path) + "$"))
    return page


def report(
    fleet: FleetProcess,
    device_id: str,
    credential: str,
    code: int,
    *,
    why: str = "",
    modules: dict[str, Any] | None = None,
) -> None:
    """Report as the device's agent would: its status on its current assignment (by ETag)."""
    device = fleet.client(credential)
    etag = device.get(f"/api/v1/devices/{device_id}/deployment").json()["etag"]
    agent = {
        "lastDesiredStatus": {"code": code, "description": why},
        "outpost": {"fleetEtag": etag, "converging": False},
        "modules": modules or {},
    }
    response = device.patch(f"/api/v1/devices/{device_id}/modules/reported", json={"$edgeAgent": agent})
    assert response.status_code == 200, response.text


def deploy(operator: httpx.Client, name: str, target: str) -> None:
    response = operator.post("/api/v1/deployments", json={"document": CONTENT, "name": name, "targetCondition": target})
    assert response.status_code == 201, response.text


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_signed_out_every_page_redirects_and_every_action_is_refused(
    console: FleetProcess, context: BrowserContext
) -> None:
    with console.client() as operator:
        credential = add_device(operator, "so-1", ring="so")
        deploy(operator, "so-d", "tags.ring = 'so'")
    anonymous = console.client("")
    for path in ["/", "/devices", "/devices/so-1", "/deployments/so-d", "/push"]:
        response = anonymous.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path
    assert anonymous.get("/console/events").status_code == 401
    for path, body in [
        ("/console/push", {"document": CONTENT, "name": "so-x", "targetCondition": "*"}),
        ("/console/check", {"document": CONTENT}),
        ("/console/target", {"targetCondition": "*"}),
        ("/console/deployments/so-d/retarget", {"targetCondition": "*"}),
        ("/console/deployments/so-d/delete", {}),
        ("/console/logout", {}),
    ]:
        assert anonymous.post(path, json=body).status_code in {401, 403}, path
    # a forged session cookie is no session
    forged = console.client("")
    forged.cookies.set("outpost-session", "YWRtaW4.9999999999.x.y")
    assert forged.get("/").status_code == 303
    assert forged.post("/console/deployments/so-d/delete", json={}).status_code == 401
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/so-d").status_code == 200
        assert operator.get("/api/v1/deployments/so-x").status_code == 404
    # in the browser: redirected to sign-in; a device credential and a wrong token cannot open the console
    page = context.new_page()
    page.goto(console.url + "/deployments/so-d")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    shot(page, "sign-in")
    page.fill("#token", credential)
    page.click("#sign-in")
    expect(page.locator("#error")).to_contain_text("a device credential cannot open the console")
    page.fill("#token", "op.YWRtaW4.wrong")
    page.click("#sign-in")
    expect(page.locator("#error")).to_contain_text("sign-in refused")
    assert not [c for c in context.cookies() if "session" in c["name"]]


def test_sign_in_overview_counts_match_the_api(console: FleetProcess, context: BrowserContext) -> None:
    with console.client() as operator:
        seen = add_device(operator, "ov-1", site="ov")
        add_device(operator, "ov-2", site="ov")
        operator.post("/api/v1/devices", json={"deviceId": "ov-3", "tags": {"site": "ov"}})
        report(console, "ov-1", seen, 200)
        deploy(operator, "ov-d", "tags.site = 'ov'")
        twins = operator.get("/api/v1/devices").json()
        group = operator.get("/api/v1/devices", params={"target": "tags.site = 'ov'"}).json()
        metrics = operator.get("/api/v1/deployments/ov-d/status").json()["systemMetrics"]
    page = sign_in(context, console)
    cookie = next(c for c in context.cookies() if c["name"] == "outpost-session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    everyone = page.locator('#groups tr[data-group="*"]')
    expect(everyone.locator(".never")).to_have_text(str(sum(1 for t in twins if not t["lastActivityTime"])))
    expect(everyone.locator(".online")).to_have_text(str(sum(1 for t in twins if t["lastActivityTime"])))
    site = page.locator("#groups tr[data-group=\"tags.site = 'ov'\"]")
    expect(site.locator(".online")).to_have_text("1")
    expect(site.locator(".never")).to_have_text(str(len(group) - 1))
    bar = page.locator('.convergence[data-deployment="ov-d"]')
    expect(bar.locator(".targeted")).to_have_text(str(metrics["targetedCount"]))
    expect(bar.locator(".applied")).to_have_text(str(metrics["appliedCount"]))
    shot(page, "overview")
    page.goto(console.url + "/devices?q=site%3Dov")
    expect(page.locator("#total")).to_contain_text("3 devices")
    page.goto(console.url + "/devices?q=ov-&state=never")
    never = sorted(t["deviceId"] for t in group if not t["lastActivityTime"])
    assert never == ["ov-2", "ov-3"]
    expect(page.locator("#devices a")).to_have_text(never)
    shot(page, "devices")


def test_push_from_the_page_converges_live_and_a_failure_shows_its_reason(
    console: FleetProcess, context: BrowserContext
) -> None:
    with console.client() as operator:
        good = add_device(operator, "canary-1", ring="canary")
        bad = add_device(operator, "canary-2", ring="canary")
        add_device(operator, "stable-1", ring="stable")
    page = sign_in(context, console, "/push")
    page.fill("#document", json.dumps(CONTENT, indent=2))
    page.fill("#name", "canary-push")
    page.fill("#target", "tags.ring = 'canary'")
    expect(page.locator("#preview .match")).to_contain_text("2 device(s) match: canary-1, canary-2")
    shot(page, "push")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#push")
    page.wait_for_url(re.compile(r"/deployments/canary-push$"))
    bar = page.locator('.convergence[data-deployment="canary-push"]')
    expect(bar.locator(".targeted")).to_have_text("2")
    expect(bar.locator(".applied")).to_have_text("2")
    expect(bar.locator(".successful")).to_have_text("0")
    page.evaluate("window.__sameDocument = true")
    # the devices report, as their agents would: one converged, one failed on a module
    report(console, "canary-1", good, 200)
    reason = "motor-sensor: image pull failed: no such image <b>outpost/motor-sensor:9</b>"
    report(console, "canary-2", bad, 500, why=reason, modules={
        "motor-sensor": {"runtimeStatus": "backoff", "restartCount": 3, "statusDescription": reason}})  # fmt: skip
    expect(bar.locator(".successful")).to_have_text("1", timeout=15000)
    expect(bar.locator(".failed-count")).to_have_text("1", timeout=15000)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    with console.client() as operator:
        metrics = operator.get("/api/v1/deployments/canary-push/status").json()["systemMetrics"]
    assert metrics == {"targetedCount": 2, "appliedCount": 2, "reportedSuccessfulCount": 1, "reportedFailedCount": 1}
    page.reload()
    expect(page.locator("#failing")).to_contain_text(reason)
    shot(page, "deployment")
    page.click("#failing a:text('canary-2')")
    page.wait_for_url(re.compile(r"/devices/canary-2$"))
    row = page.locator('#modules tr[data-module="motor-sensor"]')
    expect(row).to_contain_text("backoff")
    expect(row).to_contain_text(reason)
    expect(page.locator("#stack")).to_contain_text("canary-push (base)")
    shot(page, "device")
    # retarget, then delete, each after a confirmation
    page.goto(console.url + "/deployments/canary-push")
    page.fill("#new-target", "tags.ring = 'stable'")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#retarget")
    expect(page.locator("#target")).to_have_text("tags.ring = 'stable'")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete")
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/canary-push").json()["targetCondition"] == "tags.ring = 'stable'"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url(console.url + "/")
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/canary-push").status_code == 404


def test_a_bad_manifest_shows_its_pointers_and_stores_nothing(console: FleetProcess, context: BrowserContext) -> None:
    page = sign_in(context, console, "/push")
    broken = json.loads(json.dumps(CONTENT))
    del broken["modulesContent"]["$edgeHub"]
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["motor-sensor"]["settings"] = {}
    page.fill("#document", json.dumps(broken))
    page.fill("#name", "broken")
    page.fill("#target", "*")
    page.on("dialog", lambda dialog: pytest.fail(f"asked to confirm a broken push: {dialog.message}"))
    page.click("#push")
    problems = page.locator("#problems li")
    expect(problems.first).to_be_visible()
    text = problems.all_inner_texts()
    assert any(t.startswith("/modulesContent/$edgeHub") for t in text), text
    assert any("/modulesContent/$edgeAgent/properties.desired/modules/motor-sensor/settings" in t for t in text), text
    shot(page, "push-invalid")
    page.fill("#document", "{not json")
    page.click("#check")
    expect(page.locator("#problems")).to_contain_text("the file is not JSON")
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/broken").status_code == 404
        assert all(h["deploymentId"] != "broken" for h in operator.get("/api/v1/history").json())


def test_a_bad_target_condition_shows_line_and_column(console: FleetProcess, context: BrowserContext) -> None:
    page = sign_in(context, console, "/push")
    page.fill("#target", "tags.ring = 'canary'\nAND tags.site =")
    expect(page.locator("#preview .problem")).to_contain_text("line 2, column")
    page.fill("#target", "tags.nothing = 'here'")
    expect(page.locator("#preview .match")).to_contain_text("0 device(s) match")


def test_user_supplied_text_is_escaped(console: FleetProcess, context: BrowserContext) -> None:
    with console.client() as operator:
        credential = add_device(operator, "xss-1", note=XSS)
        report(
            console, "xss-1", credential, 500, why=XSS, modules={"m1": {"runtimeStatus": XSS, "statusDescription": XSS}}
        )
    dialogs: list[str] = []
    page = sign_in(context, console, "/devices/xss-1")
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    expect(page.locator("#tags")).to_contain_text(f"note={XSS}")
    expect(page.locator("#modules")).to_contain_text(XSS)
    page.goto(console.url + "/devices?q=xss")
    expect(page.locator("#devices")).to_contain_text(XSS)
    assert page.locator("script", has_text="alert(1)").count() == 0
    assert dialogs == []
    # and a second line of defence: only this response's own script runs
    response = page.goto(console.url + "/devices/xss-1")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'nonce-" in policy
    assert "frame-ancestors 'none'" in policy


def test_under_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    from integration.fleet_certs import self_signed

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    fleet = FleetProcess(tmp_path / "fleet", None, extra=["--cert", str(cert), "--key", str(key)], scheme="https",
                         verify=context).start()  # fmt: skip
    try:
        with httpx.Client(base_url=fleet.url, verify=context) as browser:
            response = browser.post("/login", data={"token": fleet.token})
            assert response.status_code == 303
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("__Host-outpost-session=")
            for attribute in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
                assert attribute in cookie, cookie
            assert browser.get("/").status_code == 200
    finally:
        fleet.stop()


def test_a_cross_origin_request_is_refused(console: FleetProcess, context: BrowserContext) -> None:
    with console.client() as operator:
        deploy(operator, "csrf-d", "*")
    page = sign_in(context, console)
    # another origin's page (served by the browser itself: no traffic leaves loopback) posts to the console
    evil = context.new_page()
    form = f"""<form id="f" method="post" action="{console.url}/console/deployments/csrf-d/delete"
               enctype="text/plain"><input name='{{"a":"' value='"}}'></form>
               <script>fetch("{console.url}/console/deployments/csrf-d/delete", {{method: "POST",
               credentials: "include", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
               body: "{{}}"}}).finally(() => document.getElementById("f").submit());</script>"""
    evil.route("http://evil.test/**", lambda route: route.fulfill(status=200, content_type="text/html", body=form))
    evil.goto("http://evil.test/attack")
    evil.wait_for_load_state()
    evil.wait_for_timeout(500)
    # the session itself, replayed from elsewhere without the page's token or with another Origin: refused
    cookie = next(c for c in context.cookies() if c["name"] == "outpost-session")
    stolen = console.client("")
    stolen.cookies.set("outpost-session", cookie["value"])
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert stolen.post("/console/deployments/csrf-d/delete", json={}).status_code == 403
    delete = "/console/deployments/csrf-d/delete"
    assert (
        stolen.post(delete, json={}, headers={"X-CSRF-Token": csrf or "", "Origin": "http://evil.test"}).status_code
        == 403
    )
    assert stolen.post(delete, json={}, headers={"X-CSRF-Token": "x" + (csrf or "")}).status_code == 403
    assert stolen.post(delete, json={}, headers={"X-CSRF-Token": "\u00e9".encode("latin-1")}).status_code == 403
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/csrf-d").status_code == 200
    # and with the page's token, from the page's own origin, the same action works
    assert stolen.post(delete, json={}, headers={"X-CSRF-Token": csrf or "", "Origin": console.url}).status_code == 200
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/csrf-d").status_code == 404
    # signing out ends the page's session
    page.click("header button")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(console.url + "/devices")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fdevices$"))


def test_signing_out_ends_the_session_on_the_server_a_copied_cookie_too(
    console: FleetProcess, context: BrowserContext
) -> None:
    with console.client() as operator:
        deploy(operator, "out-d", "tags.ring = 'out'")
    page = sign_in(context, console, "/deployments/out-d")
    cookie = next(c for c in context.cookies() if c["name"] == "outpost-session")["value"]
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    copied = httpx.Client(base_url=console.url, headers={"Cookie": f"outpost-session={cookie}"}, timeout=30)
    try:
        assert copied.get("/deployments/out-d").status_code == 200  # a copy works while the session lives
        expect(page.locator("#live")).to_contain_text("live updates: 20", timeout=15000)
        with copied.stream("GET", "/console/events") as feed:  # a live feed open on the copied cookie
            assert feed.status_code == 200
            lines = feed.iter_lines()
            assert next(lines).startswith("event: convergence")
            page.click("header button")
            expect(page).to_have_url(re.compile(r"/login$"))
            started = time.monotonic()
            assert "event: signed-out" in list(lines)  # then the server ends the stream
            assert time.monotonic() - started < 12
        assert not [c for c in context.cookies() if c["name"] == "outpost-session"]
        shot(page, "signed-out")
        # the copied cookie is refused everywhere now: pages, actions, the live feed
        response = copied.get("/deployments/out-d")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
        headers = {"X-CSRF-Token": csrf, "Origin": console.url}
        assert copied.post("/console/deployments/out-d/delete", json={}, headers=headers).status_code == 401
        assert copied.get("/console/events").status_code == 401
        assert copied.get("/devices/x/metrics.svg").status_code == 401
    finally:
        copied.close()
    with console.client() as operator:
        assert operator.get("/api/v1/deployments/out-d").status_code == 200


def test_a_session_ends_when_idle_and_at_its_age_limit(tmp_path: Path) -> None:
    limits = ["--session-idle-minutes", "0.05", "--session-hours", "0.002"]
    fleet = FleetProcess(tmp_path / "fleet", extra=limits).start()
    try:

        def session() -> httpx.Client:
            response = httpx.post(fleet.url + "/login", data={"token": fleet.token})
            assert response.status_code == 303
            value = response.cookies["outpost-session"]
            # the cookie sent by hand, whatever its max-age: the server alone decides
            return httpx.Client(base_url=fleet.url, headers={"Cookie": f"outpost-session={value}"}, timeout=30)

        with session() as idle:
            assert idle.get("/").status_code == 200
            time.sleep(4.0)  # idle limit 3 s
            assert idle.get("/").status_code == 303
        with session() as busy:  # used every second, it still ends at its age limit (7.2 s)
            started = time.monotonic()
            while time.monotonic() - started < 5.5:
                assert busy.get("/devices").status_code == 200
                time.sleep(1.0)
            time.sleep(max(0.0, 8.0 - (time.monotonic() - started)))
            assert busy.get("/devices").status_code == 303
    finally:
        fleet.stop()


def test_the_device_page_plots_the_metrics_the_device_reports(console: FleetProcess, context: BrowserContext) -> None:
    with console.client() as operator:
        credential = add_device(operator, "plot-1", site="plot")
    device = console.client(credential)
    scores = [0.12, 0.18, 0.95, 0.41, 0.22]
    for i, score in enumerate(scores):
        detector = {"inference": {"count": 100 * (i + 1), "latencyMsP50": 4.0 + i / 10},
                    "alerts": {"count": int(score > 0.9) + (i > 2)},
                    "lastInference": {"score": score, "alert": score > 0.9}, "model": {"version": "1"}}  # fmt: skip
        response = device.patch("/api/v1/devices/plot-1/modules/reported", json={"anomaly-detector": detector})
        assert response.status_code == 200, response.text
        time.sleep(0.4)
    page = sign_in(context, console, "/devices/plot-1")
    rows = page.locator("#metrics tr[data-metric]")
    score = page.locator('#metrics tr[data-metric="anomaly-detector/lastInference.score"]')
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the series are written once a second
        if score.count() and score.locator("td").nth(3).inner_text() == str(len(scores)):
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(score).to_contain_text("0.22")
    expect(score.locator("td").nth(3)).to_have_text(str(len(scores)))
    expect(page.locator('#metrics tr[data-metric="anomaly-detector/alerts.count"] td').nth(1)).to_have_text("1")
    expect(score.locator("td").nth(1)).to_have_text("0.22")
    names = rows.evaluate_all("rows => rows.map(r => r.dataset.metric)")
    assert names[:3] == ["anomaly-detector/lastInference.score", "anomaly-detector/alerts.count",
                         "anomaly-detector/inference.latencyMsP50"], names  # fmt: skip
    plot = page.locator("#metrics-plot")
    expect(plot).to_be_visible()
    page.wait_for_function("document.getElementById('metrics-plot').complete")
    assert page.evaluate("document.getElementById('metrics-plot').naturalWidth") > 300  # the image drew
    svg = page.request.get(console.url + "/devices/plot-1/metrics.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert "anomaly-detector/lastInference.score (last 0.22)" in svg.text()
    assert "script" not in svg.text()
    policy = page.request.get(console.url + "/devices/plot-1").headers["content-security-policy"]
    assert "script-src 'nonce-" in policy
    assert "unsafe-eval" not in policy
    assert "img-src 'self' data:" in policy
    assert page.request.get(console.url + "/devices/nobody/metrics.svg").status == 404
    shot(page, "device-metrics")


def test_the_rollout_view_shows_step_cohorts_gates_and_the_latency_plot(
    tmp_path: Path, context: BrowserContext
) -> None:
    from integration.test_rollout_fleet import CANDIDATE, MODEL, Device, base_deployment, push_model

    fleet = FleetProcess(tmp_path / "fleet").start()
    try:
        operator = fleet.client()
        push_model(fleet, "1", MODEL)
        push_model(fleet, "2", CANDIDATE)
        assert operator.post("/api/v1/deployments", json={"document": base_deployment(fleet)}).status_code == 201
        devices = [Device(fleet, f"gw-{i:02d}", tmp_path / "devices") for i in range(10)]
        body = {"name": "motor-v2", "targetCondition": "tags.site = 'plant-a'", "module": "anomaly-detector",
                "model": "motor@2", "steps": [50, 100], "soak": "1h", "minDevices": 3}  # fmt: skip
        assert operator.post("/api/v1/rollouts", json=body).status_code == 201
        deadline = time.monotonic() + 60
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for d in devices:
                d.round(slow=0.002)  # the candidate answers 2 ms later: a clear latency regression
            status = operator.get("/api/v1/rollouts/motor-v2").json()
            latency = next((g for g in (status.get("last") or {}).get("gates", []) if g["gate"] == "latency"), None)
            if latency is not None and latency["value"] is not None and status["devicesPerModel"].get("2"):
                break
            time.sleep(1.0)
        else:
            pytest.fail(f"the rollout never evaluated latency: {status}")
        reported = time.time()  # no device reports from here on: wait for a driver round that saw them all
        while (status.get("last") or {}).get("at", 0) <= reported:
            assert time.time() - reported < 30, status
            time.sleep(0.5)
            status = operator.get("/api/v1/rollouts/motor-v2").json()
        gates = {g["gate"]: g for g in status["last"]["gates"]}
        page = sign_in(context, fleet)
        row = page.locator('#rollouts tr[data-rollout="motor-v2"]')
        expect(row).to_contain_text("running")
        shot(page, "overview-rollouts")
        row.locator("a").click()
        page.wait_for_url(re.compile(r"/rollouts/motor-v2$"))
        expect(page.locator("#state")).to_have_text("running")
        expect(page.locator("#step")).to_contain_text("1 of 2: 50.0 %")
        expect(page.locator("#cohorts")).to_have_text(
            f"{status['cohorts']['treatment']} treatment · {status['cohorts']['control']} control"
        )
        for version, count in status["devicesPerModel"].items():
            expect(page.locator(f'#models tr[data-model="{version}"]')).to_contain_text(str(count))
        latency_row = page.locator('#gates tr[data-gate="latency"]')
        expect(latency_row.locator(".limit")).to_have_text("10.0")
        shown = float(latency_row.locator(".value").inner_text())
        assert shown == gates["latency"]["value"], (shown, gates["latency"])
        assert shown > 10  # the candidate is 30 % slower
        expect(page.locator('#gates tr[data-gate="soak"] .verdict')).to_have_text("wait")
        page.wait_for_function("document.getElementById('latency-plot').complete")
        assert page.evaluate("document.getElementById('latency-plot').naturalWidth") > 300
        svg = page.request.get(fleet.url + "/rollouts/motor-v2/latency.svg").text()
        figures = gates["latency"]["figures"]
        assert f"treatment ({figures['treatmentDevices']})" in svg
        assert f"control ({figures['controlDevices']})" in svg
        shot(page, "rollout")
        # pause and resume from the page (each after a confirmation), as `outpost rollout pause|resume` does
        page.once("dialog", lambda dialog: dialog.accept())
        page.click('#controls button[data-verb="pause"]')
        expect(page.locator("#state")).to_have_text("paused")
        assert operator.get("/api/v1/rollouts/motor-v2").json()["state"] == "paused"
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.click('#controls button[data-verb="resume"]')
        page.wait_for_timeout(300)
        assert operator.get("/api/v1/rollouts/motor-v2").json()["state"] == "paused"
        page.once("dialog", lambda dialog: dialog.accept())
        page.click('#controls button[data-verb="resume"]')
        expect(page.locator("#state")).to_have_text("running")
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
        refused = page.request.post(fleet.url + "/console/rollouts/motor-v2/abort", data={})  # no CSRF token
        assert refused.status == 403
        unknown = page.request.post(fleet.url + "/console/rollouts/motor-v2/explode", data={},
                                    headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert unknown.status == 404
        assert operator.get("/api/v1/rollouts/motor-v2").json()["state"] == "running"
        # the layer's deployment page links back to the rollout
        page.goto(fleet.url + "/deployments/rollout-motor-v2")
        page.click("#rollout-link")
        page.wait_for_url(re.compile(r"/rollouts/motor-v2$"))
        assert page.goto(fleet.url + "/rollouts/nothing") is not None
        expect(page.locator("#error")).to_contain_text("no rollout 'nothing'")
    finally:
        fleet.stop()


def test_search_series_and_sessions_on_both_databases(fleet: FleetProcess) -> None:
    """The console's own tables and queries on SQLite and on a real PostgreSQL (without a browser)."""
    with fleet.client() as operator:
        for i in range(12):
            add_device(operator, f"db-{i:02d}", site=f"Site-{i % 3}", ring=i % 2)
        seen = add_device(operator, "db-seen", site="elsewhere")
    device = fleet.client(seen)
    for score in (0.2, 0.9):
        reported = device.patch("/api/v1/devices/db-seen/modules/reported",
                                json={"anomaly-detector": {"lastInference": {"score": score}}})  # fmt: skip
        assert reported.status_code == 200
    odd = {"m": {"huge": 10**400, "text": "<b>", "flag": True, "deep": {"er": [1, 2]}}}  # stored, not plotted
    assert device.patch("/api/v1/devices/db-seen/modules/reported", json=odd).status_code == 200
    login = httpx.post(fleet.url + "/login", data={"token": fleet.token})
    cookie = login.cookies["outpost-session"]
    with httpx.Client(base_url=fleet.url, headers={"Cookie": f"outpost-session={cookie}"}, timeout=30) as browser:
        page = browser.get("/devices", params={"q": "site=site-1"}).text
        assert "4 devices · page 1 of 1" in page
        assert "db-01" in page
        assert "db-00" not in page
        assert "1 devices" in browser.get("/devices", params={"q": "db-", "state": "online"}).text
        assert "12 devices" in browser.get("/devices", params={"q": "ring", "state": "never"}).text
        assert "0 devices" in browser.get("/devices", params={"q": "50%_"}).text
        deadline = time.monotonic() + 15
        while "anomaly-detector/lastInference.score" not in browser.get("/devices/db-seen").text:
            assert time.monotonic() < deadline, "the reported scores never reached the series table"
            time.sleep(0.5)
        assert "(last 0.9)" in browser.get("/devices/db-seen/metrics.svg").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/").text)
        assert csrf is not None
        out = browser.post("/console/logout", data={"csrf": csrf.group(1)}, headers={"Origin": fleet.url})
        assert out.status_code == 303
        assert browser.get("/").status_code == 303  # the same cookie, sent again: the server ended it
