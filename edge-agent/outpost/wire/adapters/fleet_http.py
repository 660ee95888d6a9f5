"""The fleet's HTTP client (httpx), for operators (the CLI) and devices (the agent's fleet link).

Maps every transport failure and refusal to :class:`FleetCallError` with the service's own
sentence and problems, so callers never see httpx. A device uses ``fetch_deployment`` (a
long-poll by ETag) and the ``report_*`` calls; an operator everything else.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from outpost.errors import Problem
from outpost.wire.fleet import FleetCallError, Unreachable

__all__ = ["FleetCallError", "FleetClient", "Unreachable"]


def _q(part: str) -> str:
    return quote(part, safe="")


class FleetClient:
    """Calls to one fleet with one credential (operator token or device credential)."""

    def __init__(
        self, url: str, credential: str | None = None, *, ca_file: Path | None = None, timeout: float = 30.0
    ) -> None:
        verify: ssl.SSLContext | bool = True
        try:
            if ca_file is not None:
                verify = ssl.create_default_context(cafile=str(ca_file))
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            self.url = url.rstrip("/")
            self._http = httpx.Client(base_url=self.url, headers=headers, verify=verify, timeout=timeout)
        except (OSError, ssl.SSLError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise FleetCallError(f"cannot talk to the fleet at {url!r}: {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=dict(params or {}),
                headers=dict(headers or {}),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the fleet at {self.url}: {exc or type(exc).__name__}") from exc
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise FleetCallError(f"cannot send this to the fleet at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        return response.json() if response.content else None

    def upload_model(
        self,
        name: str,
        version: str,
        file: Path,
        *,
        sha256: str,
        metadata: Mapping[str, Any],
        progress: Callable[[int], None] = lambda _n: None,
    ) -> dict[str, Any]:
        """Stream a model file to the registry (``PUT``, octet-stream); ``progress`` gets each chunk's size."""

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as handle:
                while chunk := handle.read(256 * 1024):
                    progress(len(chunk))
                    yield chunk

        encoded = base64.urlsafe_b64encode(json.dumps(dict(metadata)).encode()).decode().rstrip("=")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(file.stat().st_size),
            "X-Model-Sha256": sha256,
        }
        if metadata:
            headers["X-Model-Metadata"] = encoded
        try:
            response = self._http.put(f"/api/v1/models/{_q(name)}/{_q(version)}", content=chunks(), headers=headers)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the fleet at {self.url}: {exc or type(exc).__name__}") from exc
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise FleetCallError(f"cannot send the model to the fleet at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _refusal(response)
        result: dict[str, Any] = response.json()
        return result

    def download_model(self, name: str, version: str, into: BinaryIO, progress: Callable[[int], None]) -> None:
        """Stream a model's bytes from the registry into ``into``."""
        try:
            with self._http.stream("GET", f"/api/v1/models/{_q(name)}/{_q(version)}/content") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _refusal(response)
                for chunk in response.iter_bytes(256 * 1024):
                    into.write(chunk)
                    progress(len(chunk))
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the fleet at {self.url}: {exc or type(exc).__name__}") from exc

    # device side ------------------------------------------------------------------------

    def activate(self, device_id: str, activation_key: str) -> str:
        body = self.json("POST", "/api/v1/activate", json={"deviceId": device_id, "activationKey": activation_key})
        return str(body["credential"])

    def fetch_deployment(self, device_id: str, etag: str | None, wait: float) -> tuple[str, dict[str, Any] | None]:
        """``(etag, assignment)``; the assignment is None when nothing changed within ``wait`` seconds."""
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        response = self.call(
            "GET",
            f"/api/v1/devices/{_q(device_id)}/deployment",
            params={"wait": wait} if etag and wait > 0 else None,
            headers=headers,
            timeout=wait + 30.0,
        )
        new_etag = response.headers.get("ETag", "").strip('"')
        if response.status_code == 304:
            return new_etag or (etag or ""), None
        return new_etag, response.json()

    def report_modules(self, device_id: str, patches: Mapping[str, Mapping[str, Any]]) -> None:
        self.call("PATCH", f"/api/v1/devices/{_q(device_id)}/modules/reported", json=dict(patches))

    def report_device(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self.call("PATCH", f"/api/v1/devices/{_q(device_id)}/twin/reported", json=dict(patch))

    # operator side ----------------------------------------------------------------------

    def add_device(self, device_id: str, tags: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", "/api/v1/devices", json={"deviceId": device_id, "tags": dict(tags)})
        return result

    def devices(self, target: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json(
            "GET", "/api/v1/devices", params={"target": target} if target else None
        )
        return result

    def device(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/devices/{_q(device_id)}")
        return result

    def patch_tags(self, device_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("PATCH", f"/api/v1/devices/{_q(device_id)}/tags", json=dict(patch))
        return result

    def remove_device(self, device_id: str) -> None:
        self.call("DELETE", f"/api/v1/devices/{_q(device_id)}")

    def set_status(self, device_id: str, status: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("PUT", f"/api/v1/devices/{_q(device_id)}/status", json={"status": status})
        return result

    def set_desired(self, device_id: str, module_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        path = f"/api/v1/devices/{_q(device_id)}/modules/{_q(module_id)}/twin/desired"
        result: dict[str, Any] = self.json("PATCH", path, json=dict(patch))
        return result

    def assignment(self, device_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/devices/{_q(device_id)}/deployment")
        return result

    def push(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", "/api/v1/deployments", json=dict(body))
        return result

    def deployments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", "/api/v1/deployments")
        return result

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/deployments/{_q(deployment_id)}")
        return result

    def update_deployment(self, deployment_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("PATCH", f"/api/v1/deployments/{_q(deployment_id)}", json=dict(changes))
        return result

    def delete_deployment(self, deployment_id: str) -> None:
        self.call("DELETE", f"/api/v1/deployments/{_q(deployment_id)}")

    def status(self, deployment_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/api/v1/deployments/{_q(deployment_id)}/status")
        return result

    def history(self, deployment_id: str | None = None) -> list[dict[str, Any]]:
        params = {"deployment": deployment_id} if deployment_id else None
        result: list[dict[str, Any]] = self.json("GET", "/api/v1/history", params=params)
        return result


def _refusal(response: httpx.Response) -> FleetCallError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or f"HTTP {response.status_code}")
    problems = [
        Problem(str(p.get("pointer", "")), str(p.get("message", "")))
        for p in body.get("problems") or []
        if isinstance(p, dict)
    ]
    return FleetCallError(message, status=response.status_code, problems=problems)
