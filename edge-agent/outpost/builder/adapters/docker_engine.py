"""ImageEngine on a local Docker engine: BuildKit builds through Debian's ``/usr/bin/docker`` client
(``DOCKER_BUILDKIT=1``, no buildx plugin needed), everything else through the docker SDK.

Builds run with ``--network none``: every input is in the staged context, so a build that tries to
fetch something fails here instead of working by accident. Used by the ``outpost build`` command.

The SDK's HTTP session is not thread-safe (docker/docker-py#3229), and the runner works on modules
in parallel: instead of one lock around every SDK call, which made two modules' pushes take turns,
each thread gets its own client, opened on its first call with the first client's settings and API
version. ``close()`` closes them all at the end.
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
_TIMEOUT_S = 600

# Opens a client for the given API version (None: ask the engine which it speaks).
_Connect = Callable[[str | None], docker.DockerClient]


def _from_env(version: str | None) -> docker.DockerClient:
    """A client from DOCKER_HOST and friends, like the docker command-line client."""
    return docker.from_env(timeout=_TIMEOUT_S, version=version)


class DockerEngine:
    """One engine for all of a build's threads, with one SDK client per thread (see the module docstring)."""

    def __init__(self, connect: _Connect = _from_env, cli: str | None = None) -> None:
        self._connect = connect
        first = self._open(None)
        try:
            first.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            first.close()
            raise _unreachable(exc) from exc
        self._version: str = first.api.api_version
        self._local = threading.local()
        self._local.client = first
        self._clients_lock = threading.Lock()  # guards _clients only; never held across an SDK call
        self._clients: dict[threading.Thread, docker.DockerClient] = {threading.current_thread(): first}
        self._cli = cli or (DEBIAN_DOCKER if os.path.exists(DEBIAN_DOCKER) else shutil.which("docker") or "docker")

    def _open(self, version: str | None) -> docker.DockerClient:
        try:
            return self._connect(version)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _unreachable(exc) from exc

    @property
    def _api(self) -> docker.APIClient:
        """This thread's client (opened on its first call); clients of finished threads are closed."""
        client: docker.DockerClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._open(self._version)
            with self._clients_lock:
                finished = [thread for thread in self._clients if not thread.is_alive()]
                stale = [self._clients.pop(thread) for thread in finished]
                self._clients[threading.current_thread()] = client
            for old in stale:
                old.close()
        return client.api

    def close(self) -> None:
        """Close every thread's client; call once, when no thread uses the engine any more."""
        with self._clients_lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def inspect(self, ref: str) -> ImageInfo | None:
        try:
            attrs = self._api.inspect_image(ref)  # type: ignore[no-untyped-call]
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
        try:
            self._api.tag(source, repository, tag)
        except docker.errors.APIError as exc:
            raise BuildError(f"could not tag {source} as {target}: {exc.explanation or exc}") from exc

    def push(self, ref: str, credentials: Credentials | None, log: Callable[[str], None]) -> str:
        repository, _, tag = ref.rpartition(":")
        auth = {"username": credentials.username, "password": credentials.password} if credentials else None
        digest = ""
        try:
            for event in self._api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
                if "error" in event:
                    # The engine's message names the registry and the reason; it never holds the password.
                    raise BuildError(f"push of {ref} failed: {event['error']}")
                aux = event.get("aux") or {}
                digest = aux.get("Digest", digest)
                if event.get("status"):
                    log(f"{event['id']}: {event['status']}" if event.get("id") else str(event["status"]))
        except docker.errors.APIError as exc:
            raise BuildError(f"push of {ref} failed: {exc.explanation or exc}") from exc
        if not digest:
            raise BuildError(f"push of {ref} reported no digest")
        return str(digest)


def _unreachable(exc: Exception) -> BuildError:
    return BuildError(f"the Docker engine does not answer ({exc}): start it (scripts/services/docker.sh) and try again")
