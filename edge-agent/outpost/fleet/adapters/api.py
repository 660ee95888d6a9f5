"""The fleet's HTTP API on FastAPI: operators manage devices and deployments, devices fetch and report.

Every route authenticates (``Authorization: Bearer``): the operator token, or a device
credential that reaches only its own device; ``/api/v1/activate`` authenticates with the
device's one-time activation key. Refusals are JSON ``{"error", "problems"}`` with a 4xx
status; a database outage is a 503; bodies over ``max_body`` bytes are refused with 413
before they are parsed. ``GET /api/v1/devices/{id}/deployment`` is a long-poll: with
``If-None-Match`` and ``?wait=S`` it answers when the device's ETag changes (or 304 after S).
Built by :func:`create_app`; served by :mod:`outpost.fleet.adapters.server`.
"""

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from outpost import __version__
from outpost.errors import StoreError
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import FleetError
from outpost.fleet.feed import Waiters
from outpost.fleet.metrics import FleetMetrics
from outpost.fleet.models import DeviceStatus
from outpost.fleet.reports import ReportWriter
from outpost.fleet.resolution import Assignment
from outpost.fleet.service import Claim, FleetService, PushRequest, Report

__all__ = ["DEFAULT_MAX_BODY", "create_app"]

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 1024 * 1024
MAX_WAIT = 300.0
STREAMED = re.compile(r"/api/v1/models/[^/]+/[^/]+")
"""``PUT`` of a model's bytes: not buffered by :class:`BodyLimit`; the route streams and bounds it."""
COUNT_AFTER = 0.5  # seconds from a change to the recount that brings the status counts up to it
BATCH_FROM = 50  # waiting long-polls from which a push's wake-up resolves them all in one batch
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class NewDevice(BaseModel):
    deviceId: str = Field(  # noqa: N815 (the wire's field name)
        description="IoT Hub device id rules: 1-128 letters, digits or - . % _ * ? ! ( ) , : = @ $ '"
    )
    tags: dict[str, Any] = Field(default_factory=dict)


class Activation(BaseModel):
    deviceId: str  # noqa: N815 (the wire's field name)
    activationKey: str  # noqa: N815 (the wire's field name)


class StatusChange(BaseModel):
    status: Literal["enabled", "disabled"]


class Push(BaseModel):
    document: dict[str, Any] = Field(description="The deployment file as given: modulesContent, content.modulesContent "
                                                 "or Azure's whole configuration document")  # fmt: skip
    name: str | None = None
    targetCondition: str | None = None  # noqa: N815 (the wire's field name)
    priority: int | None = None
    layered: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    signatures: list[dict[str, Any]] = Field(
        default_factory=list, description="Operator signatures over {modulesContent} (outpost deploy push --sign-key)"
    )


def _error(status: int, message: str, problems: list[dict[str, str]] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or []}, status_code=status)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "PUT" and STREAMED.fullmatch(scope["path"]):
            await self.app(scope, receive, send)  # the model upload streams and bounds its own body (--max-model)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(413, f"the request body is larger than {self.limit} bytes; split it or raise --max-body")
        await response(scope, receive, send)


class Measure:
    """Request counts and latency by route template (a plain ASGI wrapper: long-polls stay cheap)."""

    def __init__(self, app: ASGIApp, metrics: FleetMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route=route, method=scope["method"], status=str(status)).inc()
            if b"wait=" not in scope.get("query_string", b""):
                self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


def create_app(  # noqa: PLR0915 (the routes are declared together)
    service: FleetService,
    *,
    metrics: FleetMetrics | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    feed_interval: float = 0.2,
) -> FastAPI:
    """The ASGI application for one fleet process over ``service``."""
    metrics = metrics or FleetMetrics()
    waiters: Waiters[Assignment] = Waiters()
    writer: ReportWriter[Report, dict[str, Any]] = ReportWriter(service.report_many)

    async def read_feed() -> None:
        cursor = -1
        prune_at = time.monotonic() + 60
        while True:
            started = time.perf_counter()
            try:
                changes = await run_in_threadpool(service.store.changes, cursor)
                if cursor >= 0 and changes.everyone:
                    service.deployments_changed()  # made here or through another instance
                if cursor >= 0 and changes.devices:
                    service.forget(changes.devices)  # deactivated or removed through another instance
                if cursor >= 0 and changes.everyone and len(waiters) > BATCH_FROM:
                    results = await run_in_threadpool(service.assignments, waiters.devices())
                    await waiters.wake_in_slices(everyone=True, devices=(), results=results)
                elif cursor >= 0 and (changes.everyone or changes.devices):
                    waiters.wake(everyone=changes.everyone, devices=changes.devices)
                if cursor < 0 or changes.everyone or changes.devices:
                    uncounted.set()
                cursor = changes.cursor
                if time.monotonic() > prune_at:
                    prune_at = time.monotonic() + 60
                    await run_in_threadpool(service.store.prune_changes, 600.0)
            except StoreError as exc:
                log.warning("fleet: cannot read the change feed: %s", exc)
                waiters.wake(everyone=True, devices=())
                await asyncio.sleep(1.0)
            metrics.feed_seconds.observe(time.perf_counter() - started)
            await asyncio.sleep(feed_interval)

    uncounted = asyncio.Event()

    async def keep_counts() -> None:
        """Recount what the change feed names soon after it changes (in short transactions, see
        ``SqlStore.recount``), so a status read or the console's live bars find the rows current
        instead of recounting 10,000 devices inside their own request after a push."""
        while True:
            await uncounted.wait()
            await asyncio.sleep(COUNT_AFTER)  # changes close together: one count
            uncounted.clear()
            started = time.perf_counter()
            try:
                await run_in_threadpool(service.count)
            except (StoreError, FleetError) as exc:
                log.warning("fleet: cannot bring the status counts up to date: %s", exc)
                uncounted.set()
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not stop the counting for the process's lifetime: say it, go on
                log.exception("fleet: counting failed")
                await asyncio.sleep(1.0)
            metrics.count_seconds.observe(time.perf_counter() - started)

    collecting: dict[str, float] = {}

    def gc_pause(phase: str, info: dict[str, int]) -> None:
        """Time each collection: with 10,000 connections a full one can stall every request."""
        if phase == "start":
            collecting["at"] = time.perf_counter()
        elif "at" in collecting:
            metrics.gc_pause.labels(generation=str(info.get("generation"))).observe(
                time.perf_counter() - collecting.pop("at")
            )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(read_feed())
        counter = asyncio.create_task(keep_counts())
        gc.callbacks.append(gc_pause)
        try:
            yield
        finally:
            gc.callbacks.remove(gc_pause)
            for background in (task, counter):
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await run_in_threadpool(writer.stop)

    app = FastAPI(
        title="Outpost fleet",
        version=__version__,
        description="Devices, twins, device groups and deployments of an Outpost fleet.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False, description="Operator token or device credential")

    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        presented = credentials.credentials if credentials else None
        cached = service.cached_principal(presented)  # a credential checked moments ago: no thread, no query
        if cached is not None:
            return cached
        return await run_in_threadpool(service.authenticate, presented)

    async def reporter(
        device_id: str, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal | Claim:
        """A report's caller: known already, or a claim to be its own device that the write checks, or checked now."""
        presented = credentials.credentials if credentials else None
        cached = service.cached_principal(presented)
        if cached is not None:
            return cached
        claim = service.claim(presented, device_id)
        if claim is not None:
            return claim
        return await run_in_threadpool(service.authenticate, presented)

    async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require_operator()  # before the body is validated: a device learns nothing about operator routes
        return who

    Who = Annotated[Principal, Depends(principal)]  # noqa: N806 (a type alias)
    Operator = Annotated[Principal, Depends(operator)]  # noqa: N806 (a type alias)

    @app.exception_handler(FleetError)
    async def fleet_error(_request: Request, exc: FleetError) -> JSONResponse:
        metrics.refusals.labels(status=str(exc.status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        response = _error(exc.status, exc.message, [{"pointer": p.pointer, "message": p.message} for p in exc.problems])
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        log.error("fleet: database error: %s", exc)
        return _error(503, "the fleet database is unavailable; try again shortly")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"pointer": "/" + "/".join(str(part) for part in error.get("loc", ())), "message": str(error.get("msg"))}
            for error in exc.errors()
        ]
        metrics.refusals.labels(status="422").inc()
        summary = "; ".join(f"{p['pointer']}: {p['message']}" for p in problems)
        return _error(422, f"the request is malformed: {summary}", problems)

    # -- documents ----------------------------------------------------------------------

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_who: Who) -> JSONResponse:
        return JSONResponse(get_openapi(title=app.title, version=app.version, description=app.description,
                                        routes=app.routes))  # fmt: skip

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics (operator)")
    def prometheus(who: Operator) -> Response:
        who.require_operator()
        metrics.waiting.set(len(waiters))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- devices ------------------------------------------------------------------------

    @app.post("/api/v1/devices", status_code=201, summary="Provision a device (operator)")
    def add_device(body: NewDevice, who: Operator) -> dict[str, Any]:
        record, key = service.add_device(who, body.deviceId, body.tags)
        return {"deviceId": record.id, "activationKey": key, "twin": service.twin(who, record.id)}

    @app.post("/api/v1/activate", summary="Trade a device's activation key, once, for its credential")
    def activate(body: Activation) -> dict[str, Any]:
        credential = service.activate(body.deviceId, body.activationKey)
        return {"deviceId": body.deviceId, "credential": str(credential)}

    @app.get("/api/v1/devices", summary="Devices, optionally those a target condition selects (operator)")
    def list_devices(who: Operator, target: str | None = None) -> list[dict[str, Any]]:
        return service.list_devices(who, target)

    @app.get("/api/v1/devices/{device_id}", summary="A device's twin with its module twins")
    def get_device(device_id: str, who: Who) -> dict[str, Any]:
        return service.twin(who, device_id)

    @app.delete("/api/v1/devices/{device_id}", status_code=204, response_class=Response, summary="Remove a device")
    def remove_device(device_id: str, who: Operator) -> Response:
        service.remove_device(who, device_id)
        return Response(status_code=204)

    @app.patch("/api/v1/devices/{device_id}/tags", summary="Merge-patch a device's tags (null removes; operator)")
    def patch_tags(device_id: str, who: Operator, patch: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return service.patch_tags(who, device_id, patch)

    @app.put("/api/v1/devices/{device_id}/status", summary="Deactivate or re-activate a device (operator)")
    def set_status(device_id: str, body: StatusChange, who: Operator) -> dict[str, Any]:
        return service.set_status(who, device_id, DeviceStatus(body.status))

    @app.patch("/api/v1/devices/{device_id}/twin/reported", summary="The device reports device-level properties")
    def report_device(device_id: str, who: Who, patch: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return service.report_device(who, device_id, patch)

    @app.patch(
        "/api/v1/devices/{device_id}/modules/reported",
        summary="The device reports several module twins (answered once stored)",
        response_model=dict[str, Any],
    )
    async def report_modules(
        device_id: str, caller: Annotated[Principal | Claim, Depends(reporter)],
        patches: Annotated[dict[str, dict[str, Any]], Body()],
    ) -> Response:  # fmt: skip
        report: Report
        if isinstance(caller, Claim):  # the device's own credential, checked by the batch that reads its row anyway
            service.check_report(Principal(Kind.DEVICE, device_id), device_id, patches)
            report = (device_id, patches, caller)
        else:
            service.check_report(caller, device_id, patches)
            report = (device_id, patches)
        result = await writer.submit(report)  # answered once its batch is committed
        return Response(json.dumps(result, separators=(",", ":")), media_type="application/json")

    @app.patch("/api/v1/devices/{device_id}/modules/{module_id}/twin/desired",
               summary="Set a module's desired properties on one device (operator); signed ones carry $version "
                       "(the version the change makes) and $signatures over the result")  # fmt: skip
    def set_desired(
        device_id: str, module_id: str, who: Operator, patch: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        return service.set_module_desired(who, device_id, module_id, patch)

    @app.get(
        "/api/v1/devices/{device_id}/deployment",
        summary="The device's effective deployment; a long-poll with If-None-Match and ?wait=S",
        responses={304: {"description": "Not modified within the wait"}},
    )
    async def deployment(
        device_id: str,
        request: Request,
        who: Who,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        known = (if_none_match or "").removeprefix("W/").strip('"')
        deadline = time.monotonic() + wait
        event = waiters.subscribe(device_id)
        try:
            assignment = await run_in_threadpool(service.assignment, who, device_id)
            while True:
                remaining = deadline - time.monotonic()
                if assignment.etag != known or remaining <= 0 or await request.is_disconnected():
                    break
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    continue
                event.clear()  # before re-checking, so a change that lands meanwhile wakes us again
                fresh = waiters.take(device_id)
                assignment = fresh if fresh is not None else await run_in_threadpool(service.assignment, who, device_id)
                metrics.wakeups.labels(changed=str(assignment.etag != known).lower()).inc()
        finally:
            waiters.unsubscribe(device_id, event)
        headers = {"ETag": f'"{assignment.etag}"'}
        if assignment.etag == known:
            return Response(status_code=304, headers=headers)
        if who.is_operator or service.serves_unchanged(assignment):
            served = assignment  # after a push to all, 10,000 of these: no thread each
        else:
            served = await run_in_threadpool(service.served, assignment)
        return Response(served.as_json(), media_type="application/json", headers=headers)

    # -- deployments --------------------------------------------------------------------

    @app.post("/api/v1/deployments", status_code=201, summary="Push a deployment (operator)")
    def push(body: Push, who: Operator) -> dict[str, Any]:
        request = PushRequest(
            body.document,
            name=body.name,
            target=body.targetCondition,
            priority=body.priority,
            layered=body.layered,
            labels=body.labels,
            signatures=body.signatures,
        )
        return service.push(who, request).document()

    @app.get("/api/v1/deployments", summary="Deployments, without their content (operator)")
    def list_deployments(who: Operator) -> list[dict[str, Any]]:
        return [d.summary() for d in service.deployments(who)]

    @app.get("/api/v1/deployments/{deployment_id}", summary="A deployment with its content (operator)")
    def get_deployment(deployment_id: str, who: Operator) -> dict[str, Any]:
        return service.deployment(who, deployment_id).document()

    @app.patch("/api/v1/deployments/{deployment_id}",
               summary="Change target, priority, labels or metrics; content is immutable (operator)")  # fmt: skip
    def update_deployment(
        deployment_id: str, who: Operator, changes: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        return service.update(who, deployment_id, changes).summary()

    @app.delete("/api/v1/deployments/{deployment_id}", status_code=204, response_class=Response,
                summary="Delete a deployment (operator)")  # fmt: skip
    def delete_deployment(deployment_id: str, who: Operator) -> Response:
        service.delete(who, deployment_id)
        return Response(status_code=204)

    @app.get("/api/v1/deployments/{deployment_id}/status", summary="Counts, custom metrics, failing devices")
    def deployment_status(deployment_id: str, who: Operator) -> dict[str, Any]:
        return service.status(who, deployment_id)

    @app.get("/api/v1/history", summary="Who pushed, changed or deleted which deployment, and when (operator)")
    def get_history(who: Operator, deployment: str | None = None) -> list[dict[str, Any]]:
        return [entry.as_dict() for entry in service.history(who, deployment)]

    app.add_middleware(Measure, metrics=metrics)
    if max_body > 0:
        app.add_middleware(BodyLimit, limit=max_body)
    return app
