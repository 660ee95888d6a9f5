"""ImageEngine on a local Docker engine: BuildKit builds through Debian's ``/usr/bin/docker`` client
(``DOCKER_BUILDKIT=1``, no buildx plugin needed), everything else through the docker SDK.

Builds run with ``--network none``: every input is in the staged context, so a build that tries to
fetch something fails here instead of working by accident. Used by the ``outpost build`` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable

import docker
import docker.errors
import requests.exceptions

from outpost.builder.platforms import Platform
from outpost.builder.ports import BuildError, BuildRequest, Credentials, ImageInfo, RunResult

__all__ = ["DEBIAN_DOCKER", "DockerEngine"]

DEBIAN_DOCKER = "/usr/bin/docker"  # the 28.x client elsewhere on PATH wants a buildx plugin
_TAIL = 25


class DockerEngine:
    """One engine; SDK calls are serialised (the SDK's HTTP session is not thread-safe)."""

    def __init__(self, client: docker.DockerClient | None = None, cli: str | None = None) -> None:
        try:
            self._client = client or docker.from_env(timeout=600)
            self._client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise BuildError(
                f"the Docker engine does not answer ({exc}): start it (scripts/services/docker.sh) and try again"
            ) from exc
        self._cli = cli or (DEBIAN_DOCKER if os.path.exists(DEBIAN_DOCKER) else shutil.which("docker") or "docker")
        self._lock = threading.Lock()

    def inspect(self, ref: str) -> ImageInfo | None:
        with self._lock:
            try:
                attrs = self._client.api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError as exc:
                raise BuildError(f"could not inspect {ref}: {exc.explanation or exc}") from exc
        config = attrs.get("Config") or {}
        return ImageInfo(
            id=str(attrs["Id"]),
            architecture=str(attrs.get("Architecture", "")),
            variant=str(attrs.get("Variant", "") or ""),
            labels=dict(config.get("Labels") or {}),
        )

    def build(self, request: BuildRequest, log: Callable[[str], None]) -> str:
        args = [self._cli, "build", "--progress", "plain", "--network", "none"]
        args += ["--platform", request.platform.docker, "--file", str(request.dockerfile), "--tag", request.tag]
        for key, value in request.build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in request.labels.items():
            args += ["--label", f"{key}={value}"]
        args += [*request.options, str(request.context)]
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        tail: deque[str] = deque(maxlen=_TAIL)
        try:
            proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
            )
        except OSError as exc:
            raise BuildError(f"could not run {self._cli}: {exc}") from exc
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                log(line)
        if proc.wait() != 0:
            lines = "\n".join(tail)
            raise BuildError(f"docker build of {request.tag} ({request.platform.docker}) failed:\n{lines}")
        info = self.inspect(request.tag)
        if info is None:
            raise BuildError(f"docker build of {request.tag} succeeded but left no image")
        return info.id

    def run(self, ref: str, platform: Platform, command: tuple[str, ...], timeout: float) -> RunResult:
        args = [self._cli, "run", "--rm", "--network", "none", "--platform", platform.docker, ref, *command]
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
            )
        except subprocess.TimeoutExpired as exc:
            return RunResult(exit_code=124, output=f"timed out after {timeout:.0f} s\n{exc.output or ''}")
        except OSError as exc:
            raise BuildError(f"could not run {self._cli}: {exc}") from exc
        return RunResult(exit_code=proc.returncode, output=proc.stdout + proc.stderr)

    def tag(self, source: str, target: str) -> None:
        repository, _, tag = target.rpartition(":")
        with self._lock:
            try:
                self._client.api.tag(source, repository, tag)
            except docker.errors.APIError as exc:
                raise BuildError(f"could not tag {source} as {target}: {exc.explanation or exc}") from exc

    def push(self, ref: str, credentials: Credentials | None) -> str:
        repository, _, tag = ref.rpartition(":")
        auth = {"username": credentials.username, "password": credentials.password} if credentials else None
        digest = ""
        with self._lock:
            try:
                for event in self._client.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
                    if "error" in event:
                        # The engine's message names the registry and the reason; it never holds the password.
                        raise BuildError(f"push of {ref} failed: {event['error']}")
                    aux = event.get("aux") or {}
                    digest = aux.get("Digest", digest)
            except docker.errors.APIError as exc:
                raise BuildError(f"push of {ref} failed: {exc.explanation or exc}") from exc
        if not digest:
            raise BuildError(f"push of {ref} reported no digest")
        return str(digest)
