"""Routes for devices' signing keys and upstream imports, added to the fleet's FastAPI app by the server.

Same authentication and refusals as :mod:`outpost.fleet.adapters.api` (its exception handlers are
app-wide); the rules are :class:`outpost.fleet.imports.UpstreamImports`.
"""

from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from outpost.fleet.credentials import Principal
from outpost.fleet.imports import UpstreamImports

__all__ = ["add_import_routes"]


class KeyBody(BaseModel):
    publicKey: str = Field(description="The device's Ed25519 public key, PEM (its device.pub)")  # noqa: N815


def add_import_routes(app: FastAPI, imports: UpstreamImports) -> None:
    bearer = HTTPBearer(auto_error=False, description="Operator token")

    def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        return imports.service.authenticate(credentials.credentials if credentials else None)

    def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require_operator()  # before the body is read: a device gets 403, not a validation error
        return who

    Who = Annotated[Principal, Depends(operator)]  # noqa: N806 (a type alias)

    @app.put("/api/v1/devices/{device_id}/signing-key", summary="Register the key a device signs exports with")
    def set_key(device_id: str, body: KeyBody, who: Who) -> dict[str, Any]:
        return imports.set_key(who, device_id, body.publicKey)

    @app.get("/api/v1/devices/{device_id}/signing-key", summary="The key registered for a device (operator)")
    def get_key(device_id: str, who: Who) -> dict[str, Any]:
        return imports.key(who, device_id)

    @app.post(
        "/api/v1/devices/{device_id}/upstream-imports",
        summary="Reported properties from an upstream export, proven by the device's signature (operator)",
    )
    def import_reported(device_id: str, who: Who, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return imports.import_reported(who, device_id, body)
