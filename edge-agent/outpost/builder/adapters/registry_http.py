"""Registry on the distribution v2 HTTP API: read a manifest's digest, put a manifest list.

Basic auth (Debian's docker-registry with htpasswd) and bearer tokens (Docker Hub, ACR, GHCR) both
work. Loopback registries are spoken to over plain HTTP like Docker does; every other host over
HTTPS. Credentials go only to that registry and never into a message. Used by ``outpost build``.
"""

from __future__ import annotations

import re

import requests

from outpost.builder.ports import Credentials, ManifestInfo, RegistryError

__all__ = ["HttpRegistry"]

_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$")
_TIMEOUT = 30


class HttpRegistry:
    """One registry host (``host[:port]``); repositories are passed with that host prefix or without."""

    def __init__(self, host: str, credentials: Credentials | None) -> None:
        self._host = host.split("/", 1)[0]
        scheme = "http" if _LOOPBACK.match(self._host) else "https"
        self._base = f"{scheme}://{self._host}"
        self._credentials = credentials
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy between us and the registry
        self._token: str | None = None

    def _path(self, repository: str) -> str:
        prefix = self._host + "/"
        return repository[len(prefix) :] if repository.startswith(prefix) else repository

    def _request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        for attempt in range(2):
            auth = None
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            elif self._credentials:
                auth = (self._credentials.username, self._credentials.password)
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=headers,
                    auth=auth,
                    timeout=_TIMEOUT,
                    **kwargs,  # type: ignore[arg-type]
                )
            except requests.RequestException as exc:
                raise RegistryError(f"registry {self._host} unreachable: {type(exc).__name__}") from None
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                self._token = self._fetch_token(challenge)
                continue
            if response.status_code == 401:
                who = "no credentials" if self._credentials is None else f"user {self._credentials.username!r}"
                raise RegistryError(
                    f"registry {self._host} refused {who} (401): set OUTPOST_REGISTRY_USERNAME/"
                    "OUTPOST_REGISTRY_PASSWORD or pass --registry-credentials"
                )
            return response
        raise RegistryError(f"registry {self._host} refused the token it issued")

    def _fetch_token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"registry {self._host} asked for a token without saying where to get it")
        auth = (self._credentials.username, self._credentials.password) if self._credentials else None
        try:
            response = self._session.get(realm, params=params, auth=auth, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise RegistryError(f"token service of {self._host} unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise RegistryError(f"token service of {self._host} refused the credentials ({response.status_code})")
        body = response.json()
        return str(body.get("token") or body.get("access_token") or "")

    def manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        url = f"{self._base}/v2/{self._path(repository)}/manifests/{reference}"
        response = self._request("HEAD", url, headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self._host}: HEAD {self._path(repository)}:{reference} -> {response.status_code}"
            )
        digest = response.headers.get("Docker-Content-Digest", "")
        if not digest:
            raise RegistryError(f"registry {self._host} gave no digest for {self._path(repository)}:{reference}")
        return ManifestInfo(
            digest=digest,
            media_type=response.headers.get("Content-Type", "").split(";")[0],
            size=int(response.headers.get("Content-Length", "0")),
        )

    def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str:
        url = f"{self._base}/v2/{self._path(repository)}/manifests/{reference}"
        response = self._request("PUT", url, data=content, headers={"Content-Type": media_type})
        if response.status_code not in (200, 201):
            detail = response.text[:500].strip()
            raise RegistryError(
                f"registry {self._host} refused the manifest list {self._path(repository)}:{reference} "
                f"({response.status_code}): {detail}"
            )
        return response.headers.get("Docker-Content-Digest", "")
