"""The console's routes on the fleet's FastAPI app: pages at ``/``, actions under ``/console/``.

An operator signs in with the operator token at ``/login``; the session is a signed cookie
(:mod:`outpost.fleet.console.session`: HttpOnly, SameSite=Strict, Secure and ``__Host-`` under
TLS) that is also recorded on the server: signing out ends it everywhere, and it ends after
``max_age`` seconds, or ``idle`` seconds unused. A device credential cannot sign in. Signed
out, a page redirects to ``/login`` and an action is refused with 401. Every state-changing
request needs the session's CSRF token (a form field or ``X-CSRF-Token``) and, when the browser
says where it comes from, this origin. Pages and
actions call the same :class:`~outpost.fleet.service.FleetService` methods as the API, with the
same :class:`~outpost.fleet.credentials.Principal` checks. ``/console/events`` streams every
deployment's convergence (server-sent events), computed once per interval for all watchers.
Plots are SVG images drawn on the server (:mod:`outpost.fleet.console.plots`). Installed by
:func:`add_console`, called by :mod:`outpost.fleet.adapters.server`.
"""

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel

from outpost.fleet.adapters.api import Push
from outpost.fleet.console import plots, views
from outpost.fleet.console.render import render
from outpost.fleet.console.session import (
    IDLE_SECONDS,
    SESSION_SECONDS,
    TOUCH_SECONDS,
    SessionRecord,
    SessionStore,
    alive,
    csrf_token,
    make_session,
    session_id,
    session_name,
    verify_session,
)
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, FleetError, ForbiddenError, NotFoundError, UnauthorizedError
from outpost.fleet.rollout.driver import RolloutDriver
from outpost.fleet.series import SeriesStore
from outpost.fleet.service import FleetService, PushRequest

__all__ = ["add_console"]

T = TypeVar("T")

PREVIEW_DEVICES = 20
DUTY = 5.0  # the live feed recomputes at most every DUTY x its cost
PAGE_MAX_AGE = 2.0  # older bars are recomputed; meanwhile the overview shows them and its live feed corrects them
RECHECK = 5.0  # a live feed re-checks its session this often: signing out ends open streams too
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"  # opened alone: no script


class TargetText(BaseModel):
    targetCondition: str  # noqa: N815 (the wire's field name)


class Signed:
    """A signed-in operator and the CSRF token of their session."""

    def __init__(self, who: Principal, csrf: str) -> None:
        self.who = who
        self.csrf = csrf


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (a refusal, never a 500)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def security_headers(nonce: str) -> dict[str, str]:
    """Script and style only from this response's nonce; no framing, no foreign form targets."""
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; style-src-attr 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }


def _request(body: Push) -> PushRequest:
    return PushRequest(body.document, name=body.name, target=body.targetCondition, priority=body.priority,
                       layered=body.layered, labels=body.labels)  # fmt: skip


def add_console(  # noqa: PLR0915 (the routes are declared together)
    app: FastAPI,
    service: FleetService,
    *,
    sessions: SessionStore,
    series: SeriesStore,
    index: views.DeviceIndex,
    rollouts: RolloutDriver | None = None,
    secure: bool = False,
    interval: float = 0.5,
    max_age: float = SESSION_SECONDS,
    idle: float = IDLE_SECONDS,
) -> None:
    """Install the console's pages and actions on ``app`` (the API's app, so one process serves both)."""
    cookie_name = "__Host-outpost-session" if secure else "outpost-session"

    def current(request: Request) -> Signed | None:
        """The signed-in operator: a cookie with a valid MAC whose session the server still holds."""
        cookie = request.cookies.get(cookie_name)
        if not cookie:
            return None
        name = session_name(cookie)
        operator_hash = service.store.operator_hash(name) if name else None
        if name is None or operator_hash is None or not verify_session(cookie, operator_hash):
            return None
        key, now = session_id(cookie), time.time()
        record = sessions.session(key)
        if not alive(record, name, now, idle):
            return None
        if record is not None and now - record.last_seen > min(TOUCH_SECONDS, idle / 10):
            sessions.touch_session(key, now)
        return Signed(Principal(Kind.OPERATOR, name), csrf_token(cookie, operator_hash))

    def same_origin(request: Request) -> bool:
        """Where the browser says the request comes from (Origin, else Referer), if it says, is here."""
        claimed = request.headers.get("origin") or request.headers.get("referer")
        if not claimed or claimed == "null":
            return claimed is None
        parts = urlsplit(claimed)
        return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.headers.get('host', '')}"

    def action(request: Request) -> Principal:
        """A state-changing call: signed in, from this origin, with the session's CSRF token."""
        signed = current(request)
        if signed is None:
            raise UnauthorizedError("not signed in: sign in at /login with the operator token")
        if not same_origin(request):
            raise ForbiddenError("refused: the request comes from another origin")
        if not _same(request.headers.get("x-csrf-token", ""), signed.csrf):
            raise ForbiddenError("refused: missing or wrong CSRF token; reload the page")
        return signed.who

    Action = Annotated[Principal, Depends(action)]  # noqa: N806 (a type alias)

    def html_page(template: str, code: int, **context: Any) -> HTMLResponse:
        """A page with a fresh script nonce: the Content-Security-Policy runs only our own inline script."""
        nonce = secrets.token_urlsafe(16)
        html = render(template, nonce=nonce, **context)
        return HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store", **security_headers(nonce)})

    def show(request: Request, build: Callable[[Principal], tuple[str, dict[str, Any]]]) -> Response:
        signed = current(request)
        if signed is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        try:
            template, context = build(signed.who)
        except FleetError as exc:
            return html_page("error.html", exc.status, who=signed.who, csrf=signed.csrf, status=exc.status,
                             message=exc.message)  # fmt: skip
        return html_page(template, 200, who=signed.who, csrf=signed.csrf, **context)

    def login_page(error: str = "", next_path: str = "/", status: int = 200) -> HTMLResponse:
        return html_page("login.html", status, who=None, csrf="", error=error, next=next_path)

    def safe_next(value: str) -> str:
        return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        if current(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return login_page(next_path=safe_next(next))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        next_path = safe_next((form.get("next") or ["/"])[0])
        if not same_origin(request):
            return login_page("refused: the sign-in comes from another origin", next_path, 403)
        try:
            who = await run_in_threadpool(service.authenticate, token)
        except FleetError as exc:
            return login_page(f"sign-in refused: {exc.message}", next_path, 401)
        if who.kind is not Kind.OPERATOR:
            return login_page("a device credential cannot open the console; use the operator token", next_path, 403)
        operator_hash = await run_in_threadpool(service.store.operator_hash, who.name)
        if operator_hash is None:  # the operator went away since the token was checked
            return login_page("sign-in refused: the operator token is not valid", next_path, 401)
        now = time.time()
        cookie = make_session(who.name, operator_hash, now, max_age)
        record = SessionRecord(who.name, now, now + max_age, now)
        await run_in_threadpool(sessions.add_session, session_id(cookie), record)
        await run_in_threadpool(sessions.prune_sessions, now)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(cookie_name, cookie, max_age=max(1, int(max_age)), path="/", httponly=True,
                            samesite="strict", secure=secure)  # fmt: skip
        return response

    @app.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        signed = await run_in_threadpool(current, request)
        if signed is None or not same_origin(request):
            raise ForbiddenError("refused: not signed in or from another origin")
        if not _same((form.get("csrf") or [""])[0], signed.csrf):
            raise ForbiddenError("refused: missing or wrong CSRF token; reload the page")
        await run_in_threadpool(sessions.end_session, session_id(request.cookies.get(cookie_name, "")))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(cookie_name, path="/", httponly=True, samesite="strict", secure=secure)
        return response

    # -- pages ----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def overview(request: Request) -> Response:
        signed = await run_in_threadpool(current, request)
        bars = None
        if signed is not None:
            if latest["data"] and time.monotonic() - latest["at"] > PAGE_MAX_AGE and not computing.locked():
                # render with the last bars now; the page's live feed brings the fresh ones within a second
                refreshing.add(task := asyncio.create_task(snapshot(signed.who, PAGE_MAX_AGE)))
                task.add_done_callback(refreshing.discard)
                bars = json.loads(str(latest["data"]))
            else:
                bars = json.loads(await snapshot(signed.who, PAGE_MAX_AGE))

        def build(who: Principal) -> tuple[str, dict[str, Any]]:
            listed = rollouts.rollouts(who) if rollouts is not None else []  # stored state only: one query
            return "overview.html", {**views.overview(service, who, bars), "rollouts": listed}

        return await run_in_threadpool(show, request, build)

    @app.get("/devices", include_in_schema=False)
    def devices(request: Request, q: str = "", state: str = "", page: Annotated[int, Query(ge=1)] = 1) -> Response:
        number = page
        return show(request, lambda who: ("devices.html", views.device_list(index, who, query=q, state=state,
                                                                            page=number)))  # fmt: skip

    def since() -> float:
        return time.time() - views.SERIES_DAYS * 86400

    @app.get("/devices/{device_id}", include_in_schema=False)
    def device(request: Request, device_id: str) -> Response:
        def build(who: Principal) -> tuple[str, dict[str, Any]]:
            page = views.device_page(service, who, device_id)
            return "device.html", {**page, "metrics": views.metric_summary(series.series(device_id, since()))}

        return show(request, build)

    def image(request: Request, draw: Callable[[Principal], bytes]) -> Response:
        """An SVG plot for a signed-in operator (a plain 401/404 otherwise: it is an image, not a page)."""
        signed = current(request)
        if signed is None:
            return JSONResponse({"error": "not signed in: sign in at /login", "problems": []}, status_code=401)
        svg = draw(signed.who)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store",
                        "Content-Security-Policy": SVG_POLICY, "X-Content-Type-Options": "nosniff"})  # fmt: skip

    drawn: dict[tuple[str, ...], bytes] = {}  # the last plots, by what they show (a reload draws nothing new)

    def cached(key: tuple[str, ...], draw: Callable[[], bytes]) -> bytes:
        if key not in drawn:
            if len(drawn) >= 64:
                drawn.pop(next(iter(drawn)))
            drawn[key] = draw()
        return drawn[key]

    @app.get("/devices/{device_id}/metrics.svg", include_in_schema=False)
    def device_metrics(request: Request, device_id: str) -> Response:
        def draw(who: Principal) -> bytes:
            service.twin(who, device_id)  # the same authorisation as the page (and 404 for no such device)
            found = series.series(device_id, since())
            key = ("device", device_id, *(f"{n}:{len(p)}:{p[-1][0]}" for n, p in sorted(found.items())))
            return cached(key, lambda: plots.metrics_svg(found, device_id))

        return image(request, draw)

    @app.get("/deployments/{deployment_id}", include_in_schema=False)
    def deployment(request: Request, deployment_id: str) -> Response:
        return show(request, lambda who: ("deployment.html", views.deployment_page(service, who, deployment_id)))

    def driver() -> RolloutDriver:
        if rollouts is None:
            raise NotFoundError("this fleet serves no rollouts")
        return rollouts

    @app.get("/rollouts/{name}", include_in_schema=False)
    def rollout(request: Request, name: str) -> Response:
        return show(request, lambda who: ("rollout.html", views.rollout_page(driver(), who, name)))

    @app.get("/rollouts/{name}/latency.svg", include_in_schema=False)
    def rollout_latency(request: Request, name: str) -> Response:
        def draw(who: Principal) -> bytes:
            treatment, control = driver().latencies(who, name)
            step = driver().rollout(who, name)
            key = ("rollout", name, str(step.step), repr(treatment), repr(control))
            title = f"rollout {name}, step {step.step + 1} ({step.percent:g} %)"
            return cached(key, lambda: plots.latency_svg(treatment, control, title=title))

        return image(request, draw)

    @app.get("/push", include_in_schema=False)
    def push_form(request: Request) -> Response:
        return show(request, lambda _who: ("push.html", {}))

    # -- actions --------------------------------------------------------------------------

    @app.post("/console/target", include_in_schema=False)
    def preview_target(body: TargetText, who: Action) -> dict[str, Any]:
        matched = service.list_devices(who, body.targetCondition)
        return {"count": len(matched), "devices": [t["deviceId"] for t in matched[:PREVIEW_DEVICES]]}

    def check(body: Push, who: Principal) -> dict[str, Any]:
        record = service.check_push(who, _request(body))
        try:
            service.deployment(who, record.id)
        except NotFoundError:
            return {"id": record.id, "count": len(service.list_devices(who, record.target))}
        raise ConflictError(f"a deployment named {record.id!r} exists already; give another name")

    @app.post("/console/check", include_in_schema=False)
    def check_push(body: Push, who: Action) -> dict[str, Any]:
        return check(body, who)

    @app.post("/console/push", status_code=201, include_in_schema=False)
    def push(body: Push, who: Action) -> dict[str, Any]:
        return service.push(who, _request(body)).summary()

    @app.post("/console/deployments/{deployment_id}/retarget", include_in_schema=False)
    def retarget(deployment_id: str, body: TargetText, who: Action) -> dict[str, Any]:
        return service.update(who, deployment_id, {"targetCondition": body.targetCondition}).summary()

    @app.post("/console/deployments/{deployment_id}/delete", include_in_schema=False)
    def delete(deployment_id: str, who: Action, _body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        service.delete(who, deployment_id)
        return {"deleted": deployment_id}

    @app.post("/console/rollouts/{name}/{verb}", include_in_schema=False)
    def control_rollout(name: str, verb: str, who: Action, _body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Pause, resume, abort or approve: the same driver calls as ``outpost rollout ACTION``."""
        controls = {"pause": driver().pause, "resume": driver().resume, "abort": driver().abort,
                    "approve": driver().approve}  # fmt: skip
        if verb not in controls:
            raise NotFoundError(f"no rollout action {verb!r}: pause, resume, abort or approve")
        return {"state": str(controls[verb](who, name).state)}

    # -- live convergence -----------------------------------------------------------------

    latest: dict[str, Any] = {"at": 0.0, "data": "", "cost": 0.0}
    limiters: list[anyio.CapacityLimiter] = []

    async def feed_thread(work: Callable[[], T]) -> T:
        """Run the live feed's reads on threads of its own: after a push 10,000 long-polls may queue
        work on the shared pool, and the bars should not wait behind them."""
        if not limiters:
            limiters.append(anyio.CapacityLimiter(2))
        return await anyio.to_thread.run_sync(work, limiter=limiters[0])

    computing = asyncio.Lock()
    refreshing: set[asyncio.Task[str]] = set()

    async def snapshot(who: Principal, max_age: float = interval) -> str:
        """Every deployment's convergence, computed at most once per ``max_age`` for every watcher.

        Never more often than every ``DUTY`` times its own cost, so watchers of a large fleet take
        at most a fifth of the process from the device API. The cost is the CPU time of the thread
        that computed it: time spent waiting (for the GIL, for a busy database) is not its cost, and
        counting it would hold the bars back for minutes after a busy moment.
        """

        def compute() -> tuple[dict[str, dict[str, int]], float]:
            began = time.thread_time()
            bars = views.convergence(service, who, recount=False)
            return bars, time.thread_time() - began

        async with computing:
            if time.monotonic() - latest["at"] >= max(max_age, DUTY * latest["cost"]):
                bars, latest["cost"] = await feed_thread(compute)
                latest["data"] = json.dumps(bars, sort_keys=True)
                latest["at"] = time.monotonic()
            return str(latest["data"])

    @app.get("/console/events", include_in_schema=False)
    def events(request: Request) -> Response:
        signed = current(request)
        if signed is None:
            return JSONResponse({"error": "not signed in: sign in at /login", "problems": []}, status_code=401)
        who = signed.who

        async def stream() -> AsyncIterator[str]:
            sent = ""
            beat = time.monotonic()
            checked = time.monotonic()
            while not await request.is_disconnected():
                if time.monotonic() - checked > RECHECK:
                    checked = time.monotonic()
                    if await feed_thread(lambda: current(request)) is None:
                        yield "event: signed-out\ndata: {}\n\n"
                        return
                data = await snapshot(who)
                if data != sent:
                    sent = data
                    beat = time.monotonic()
                    yield f"event: convergence\ndata: {data}\n\n"
                elif time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(interval)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip
