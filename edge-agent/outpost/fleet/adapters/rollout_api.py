"""The rollout and model-registry routes, added to the fleet's FastAPI app by the server.

Same authentication and refusals as :mod:`outpost.fleet.adapters.api` (its exception handlers
are app-wide). Models are pushed as JSON with base64 content (so the fleet's body limit applies);
``GET /api/v1/models/{name}/{version}/content`` serves the bytes to operators and devices with
HTTP ranges (206, ``Content-Range``), so a broken download resumes where it stopped.
"""

import base64
import binascii
import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from outpost.errors import Problem
from outpost.fleet.credentials import Principal
from outpost.fleet.errors import FleetError, InvalidError
from outpost.fleet.rollout.access import ModelAccess
from outpost.fleet.rollout.driver import RolloutDriver, StartRequest
from outpost.fleet.rollout.store import ModelRecord
from outpost.fleet.service import FleetService

__all__ = ["DEFAULT_MAX_MODEL", "add_rollout_routes"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
DEFAULT_MAX_MODEL = 64 * 1024 * 1024


class ModelPush(BaseModel):
    name: str
    version: str
    content: str = Field(description="The model file, base64")
    metadata: dict[str, Any] = Field(default_factory=dict)


class RolloutStart(BaseModel):
    name: str
    targetCondition: str  # noqa: N815 (the wire's field name)
    module: str
    model: str = Field(description="NAME@VERSION from the model registry")
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    soak: str | None = None
    minDevices: int | None = None  # noqa: N815 (the wire's field name)
    gates: list[str] = Field(default_factory=list)
    approveEachStep: bool = False  # noqa: N815 (the wire's field name)
    approvePromotion: bool = False  # noqa: N815 (the wire's field name)
    signatures: dict[str, Any] | None = Field(
        default=None,
        description="Operator signatures over every content the rollout can push (outpost rollout start --sign-key): "
        '{"baseDeployment": ID, "layer": [SIG], "promoted": [SIG]}',
    )


class RangeError(FleetError):
    status = 416


class TooLargeError(FleetError):
    status = 413


class UnsupportedError(FleetError):
    status = 415


def _metadata(header: str | None) -> dict[str, Any]:
    if not header:
        return {}
    try:
        doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidError(
            "the model metadata is not base64url JSON", [Problem("X-Model-Metadata", "base64url of a JSON object")]
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidError("the model metadata must be a JSON object", [Problem("X-Model-Metadata", "an object")])
    return doc


def add_rollout_routes(  # noqa: PLR0915 (the routes are declared together)
    app: FastAPI,
    service: FleetService,
    driver: RolloutDriver,
    access: ModelAccess,
    *,
    max_model: int = DEFAULT_MAX_MODEL,
) -> None:
    bearer = HTTPBearer(auto_error=False, description="Operator token or device credential")

    def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        return service.authenticate(credentials.credentials if credentials else None)

    def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require_operator()
        return who

    Who = Annotated[Principal, Depends(principal)]  # noqa: N806 (a type alias)
    Operator = Annotated[Principal, Depends(operator)]  # noqa: N806 (a type alias)
    registry = driver.registry

    @app.post("/api/v1/models", status_code=201, summary="Register a model version (operator; immutable)")
    def push_model(body: ModelPush, who: Operator) -> dict[str, Any]:
        try:
            content = base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidError("the model content is not base64", [Problem("/content", "expected base64")]) from exc
        return registry.push(who, body.name, body.version, content, body.metadata).as_dict()

    @app.put(
        "/api/v1/models/{name}/{version}",
        status_code=201,
        summary="Register a model version from its raw bytes, streamed (application/octet-stream; operator)",
    )
    async def upload_model(  # noqa: PLR0917 (FastAPI maps parameters to the request)
        name: str,
        version: str,
        request: Request,
        who: Operator,
        sha256: Annotated[str, Header(alias="X-Model-Sha256", description="sha256 of the body, hex")],
        metadata: Annotated[
            str | None, Header(alias="X-Model-Metadata", description="base64url of the metadata JSON object")
        ] = None,
        content_type: Annotated[str | None, Header(alias="Content-Type")] = None,
    ) -> dict[str, Any]:
        if (content_type or "").split(";")[0].strip().lower() != "application/octet-stream":
            raise UnsupportedError("send the model's bytes as Content-Type: application/octet-stream")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_model:
            raise TooLargeError(f"the model is {declared} bytes; this fleet takes at most {max_model} (--max-model)")
        meta = _metadata(metadata)
        digest = hashlib.sha256()
        content = bytearray()
        async for chunk in request.stream():
            content += chunk
            if len(content) > max_model:
                raise TooLargeError(f"the model is over {max_model} bytes, the most this fleet takes (--max-model)")
            digest.update(chunk)
        if digest.hexdigest() != sha256.strip().lower():
            raise InvalidError(
                "the upload does not match its X-Model-Sha256; nothing was stored",
                [Problem("X-Model-Sha256", f"the body's sha256 is {digest.hexdigest()}")],
            )
        record = await run_in_threadpool(registry.push, who, name, version, bytes(content), meta)
        return record.as_dict()

    @app.get("/api/v1/models", summary="Registered models (operator)")
    def list_models(who: Operator) -> list[dict[str, Any]]:
        return [m.as_dict() for m in registry.models(who)]

    @app.get("/api/v1/models/{name}/{version}", summary="One model's sha256, size and metadata")
    def show_model(name: str, version: str, who: Who) -> dict[str, Any]:
        return registry.model(who, name, version).as_dict()

    async def ranged(record: ModelRecord, range_header: str | None) -> Response:
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{record.sha256}"', "X-Model-Sha256": record.sha256}
        name, version = record.name, record.version
        if range_header is None:
            data = await run_in_threadpool(registry.store.model_content, name, version)
            return Response(data, media_type="application/octet-stream", headers=headers)
        match = _RANGE.fullmatch(range_header.strip())
        if match is None or int(match.group(1)) >= record.size:
            raise RangeError(f"range {range_header!r} is outside the model's {record.size} bytes")
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else record.size - 1, record.size - 1)
        if end < start:
            raise RangeError(f"range {range_header!r} is empty")
        data = await run_in_threadpool(registry.store.model_content, name, version, start, end)
        headers["Content-Range"] = f"bytes {start}-{end}/{record.size}"
        return Response(data, status_code=206, media_type="application/octet-stream", headers=headers)

    @app.get(
        "/api/v1/models/{name}/{version}/content",
        response_class=Response,
        summary="Download a model (operator, or a device whose deployment names it); honours Range: bytes=START-[END]",
    )
    async def model_content(
        name: str, version: str, who: Who, range_header: Annotated[str | None, Header(alias="Range")] = None
    ) -> Response:
        record = await run_in_threadpool(registry.model, who, name, version)
        await run_in_threadpool(access.require_named, who, record)
        return await ranged(record, range_header)

    @app.get(
        "/api/v1/devices/{device_id}/models/{name}/{version}/content",
        response_class=Response,
        summary="Download a model the device's deployment names (its credential, its model token, or an operator); "
        "honours Range",
    )
    async def device_model_content(
        device_id: str,
        name: str,
        version: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        range_header: Annotated[str | None, Header(alias="Range")] = None,
    ) -> Response:
        presented = credentials.credentials if credentials else None
        record = await run_in_threadpool(access.authorize, presented, device_id, name, version)
        return await ranged(record, range_header)

    def start_request(body: RolloutStart) -> StartRequest:
        return StartRequest(
            name=body.name,
            target=body.targetCondition,
            module=body.module,
            model=body.model,
            steps=body.steps,
            soak=body.soak,
            min_devices=body.minDevices,
            gates=body.gates,
            approve_each_step=body.approveEachStep,
            approve_promotion=body.approvePromotion,
            signatures=body.signatures,
        )

    @app.post("/api/v1/rollouts/check", summary="Check a rollout start and show what it would push (operator)")
    def check_rollout(body: RolloutStart, who: Operator) -> dict[str, Any]:
        rollout = driver.start(who, start_request(body), dry_run=True)
        return {"name": rollout.name, "module": rollout.module, "baseDeployment": rollout.base_deployment,
                "model": rollout.model, "controlModel": rollout.control_model}  # fmt: skip

    @app.post("/api/v1/rollouts", status_code=201, summary="Start a rollout (operator)")
    def start_rollout(body: RolloutStart, who: Operator) -> dict[str, Any]:
        driver.start(who, start_request(body))
        return driver.status(who, body.name)

    @app.get("/api/v1/rollouts", summary="Rollouts (operator)")
    def list_rollouts(who: Operator) -> list[dict[str, Any]]:
        return [driver.status(who, r.name) for r in driver.rollouts(who)]

    @app.get("/api/v1/rollouts/{name}", summary="A rollout: step, cohorts, devices per model, gates (operator)")
    def rollout_status(name: str, who: Operator) -> dict[str, Any]:
        return driver.status(who, name)

    @app.post("/api/v1/rollouts/{name}/{action}", summary="pause, resume, abort or approve a rollout (operator)")
    def control_rollout(name: str, action: str, who: Operator) -> dict[str, Any]:
        actions = {"pause": driver.pause, "resume": driver.resume, "abort": driver.abort, "approve": driver.approve}
        if action not in actions:
            raise InvalidError(f"unknown action {action!r}", [Problem("/action", "pause, resume, abort or approve")])
        actions[action](who, name)
        return driver.status(who, name)
