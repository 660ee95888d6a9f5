"""Docker Engine runtime: modules are containers, created from the manifest's createOptions.

``createOptions`` is Docker Engine ``ContainerCreate`` JSON and is posted as such (docker-py's
``create_container_from_config``), so every option Azure users write works unchanged. The
agent supervises restarts itself, so the container's own restart policy is forced to ``no``;
logs are capped (json-file, 3 x 10 MB) unless the manifest sets ``LogConfig``, so a chatty
module cannot fill the disk. Library exceptions become ``TemporaryError`` or
``PermanentError`` here and nowhere else.

The ``edgeHub`` system module (image ``outpost/edge-hub``, ``outpost hub run``) reads the agent's
deployment and the device key: its container also gets the agent's state root, the parent of the
``OUTPOST_AGENT_STATE_DIR`` the agent puts in every module's environment, bind-mounted at the same
path. The hub then follows the deployment and keeps its own state in ``<root>/hub``, exactly as
when it runs as a process.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

import docker
import docker.errors
import requests

from outpost.agent.observed import Health, ModuleState, Observed, RunState, boot_time
from outpost.agent.runtime import LABEL_AGENT, LABEL_DEPLOYMENT, LABEL_HASH, LABEL_MODULE, Platform
from outpost.agent.spec import ModuleSpec, RegistryAuth
from outpost.errors import ModuleRuntimeError, PermanentError, TemporaryError

__all__ = ["DockerRuntime"]

_NANOS = 1_000_000_000
_STATES = {
    "created": RunState.CREATED,
    "running": RunState.RUNNING,
    "restarting": RunState.RUNNING,
    "paused": RunState.RUNNING,
    "exited": RunState.EXITED,
    "dead": RunState.DEAD,
    "removing": RunState.EXITED,
}
_FRACTION = re.compile(r"\.(\d{1,9})")
_HUB_MODULE = "edgeHub"
_REFUSED = re.compile(r"unauthorized|authentication required|denied|manifest unknown|not found", re.IGNORECASE)


def _time(text: str | None) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps; its zero time means never."""
    if not text or text.startswith("0001-"):
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _health_from_status(status: str) -> Health:
    if "(healthy)" in status:
        return Health.HEALTHY
    if "(unhealthy)" in status:
        return Health.UNHEALTHY
    if "(health: starting)" in status:
        return Health.STARTING
    return Health.NONE


def _image_key(image: str) -> str:
    """``name`` and ``name:latest`` are the same image to Docker."""
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in image) else image + ":latest"


class DockerRuntime:
    """A ``ContainerRuntime`` over the Docker Engine API."""

    kind = "docker"

    def __init__(
        self,
        namespace: str = "default",
        *,
        base_url: str | None = None,
        timeout: float = 120,
        pins: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.namespace = namespace
        self._pins = pins or dict  # digest reference -> local image id (StateDir.image_pins)
        try:
            self.client = (
                docker.DockerClient(base_url=base_url, timeout=int(timeout)) if base_url else docker.from_env()
            )
            self.client.api.timeout = int(timeout)
        except docker.errors.DockerException as exc:
            raise TemporaryError(
                f"cannot reach the Docker engine ({exc}); start dockerd or use --runtime process", action="connect"
            ) from exc
        self._inspected: dict[str, tuple[str, dict[str, Any]]] = {}
        self._boot = boot_time()  # the engine runs on this machine: its containers share our boot

    def container_name(self, module: str) -> str:
        return module if self.namespace == "default" else f"{self.namespace}-{module}"

    # -- reading -------------------------------------------------------------------------------

    def observe(self) -> Observed:
        with self._errors("observe", ""):
            summaries = self.client.api.containers(all=True, filters={"label": f"{LABEL_AGENT}={self.namespace}"})
            images = self.client.api.images()
        modules: dict[str, ModuleState] = {}
        seen: set[str] = set()
        for summary in summaries:
            labels = summary.get("Labels") or {}
            name = labels.get(LABEL_MODULE)
            if not name:
                continue
            seen.add(summary["Id"])
            details = self._details(summary)
            state = details.get("State", {})
            modules[name] = ModuleState(
                name=name,
                id=summary["Id"],
                image=summary.get("Image", ""),
                image_id=summary.get("ImageID", ""),
                config_hash=labels.get(LABEL_HASH, ""),
                deployment_id=labels.get(LABEL_DEPLOYMENT, ""),
                state=_STATES.get(summary.get("State", ""), RunState.UNKNOWN),
                exit_code=state.get("ExitCode") if summary.get("State") in ("exited", "dead") else None,
                started_at=_time(state.get("StartedAt")),
                finished_at=_time(state.get("FinishedAt")),
                health=_health_from_status(summary.get("Status", "")),
            )
        self._inspected = {cid: entry for cid, entry in self._inspected.items() if cid in seen}
        tags = {_image_key(tag) for image in images for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"}
        # repo@sha256:... references (digest-pinned deployments) are known by their RepoDigests.
        tags |= {ref for image in images for ref in image.get("RepoDigests") or [] if "@" in ref}
        # ... or, after `docker load` (which drops them), by the pins `outpost bundle apply` recorded.
        ids = {image.get("Id") for image in images}
        tags |= {ref for ref, image_id in self._pins().items() if image_id in ids}
        return Observed(modules=modules, images=frozenset(tags), boot_time=self._boot)

    def _details(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Inspect a container only when its state changed since the last look (cheap no-op plans).

        Our own start/stop/remove clear the cache, so a quick stop+start is never missed.
        """
        cid, key = summary["Id"], str(summary.get("State"))
        cached = self._inspected.get(cid)
        if cached is None or cached[0] != key:
            try:
                details: dict[str, Any] = self.client.api.inspect_container(cid)
            except docker.errors.NotFound:
                return {}
            self._inspected[cid] = (key, details)
            return details
        return cached[1]

    def platform(self) -> Platform:
        with self._errors("info", ""):
            info = self.client.info()
        return {
            "os": str(info.get("OSType", "")),
            "architecture": str(info.get("Architecture", "")),
            "version": str(info.get("ServerVersion", "")),
            "rootDir": str(info.get("DockerRootDir", "")),
        }

    def logs(self, module: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        with self._errors("logs", module):
            stream = self.client.api.logs(
                self.container_name(module), stream=True, follow=follow, tail=tail if tail is not None else "all"
            )
            pending = b""
            for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if pending:
                yield pending.decode("utf-8", "replace")

    # -- changing ------------------------------------------------------------------------------

    def pull(self, image: str, auth: RegistryAuth | None) -> None:
        # repo@sha256:... (a digest-pinned deployment, e.g. from `outpost build`): the engine takes the
        # digest as the tag; splitting at the last ':' would cut the digest instead.
        if "@" in image:
            repository, _, tag = image.partition("@")
        else:
            repository, _, tag = _image_key(image).rpartition(":")
        auth_config = {"username": auth.username, "password": auth.password} if auth else None
        try:
            self.client.api.pull(repository, tag=tag, auth_config=auth_config)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            why = _explain(exc)
            if isinstance(exc, docker.errors.NotFound) or _REFUSED.search(why):
                # The registry answered and said no: retrying the same pull cannot help.
                hint = "check the image name and tag, and registryCredentials for its registry"
                raise PermanentError(f"could not pull {image}: {why}; {hint}", action="pull") from exc
            raise TemporaryError(f"could not pull {image}: {why}", action="pull") from exc

    def create(self, spec: ModuleSpec, deployment_id: str) -> str:
        config = self._config(spec, deployment_id)
        with self._errors("create", spec.name):
            created = self.client.api.create_container_from_config(  # type: ignore[no-untyped-call]
                config, name=self.container_name(spec.name)
            )
        return str(created["Id"])

    def _config(self, spec: ModuleSpec, deployment_id: str) -> dict[str, Any]:
        config: dict[str, Any] = copy.deepcopy(dict(spec.create_options))
        config["Image"] = self._pins().get(spec.image, spec.image)  # a pinned digest runs its loaded image id
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        env.update(spec.env)
        config["Env"] = [f"{key}={value}" for key, value in env.items()]
        config["Labels"] = {
            **(config.get("Labels") or {}),
            LABEL_AGENT: self.namespace,
            LABEL_MODULE: spec.name,
            LABEL_HASH: spec.config_hash,
            LABEL_DEPLOYMENT: deployment_id,
        }
        host = config.setdefault("HostConfig", {})
        host["RestartPolicy"] = {"Name": "no"}
        if spec.name == _HUB_MODULE and (agent_state := env.get("OUTPOST_AGENT_STATE_DIR")):
            # The hub reads <root>/<agent>/deployment.json and <root>/device.key, writes <root>/hub.
            root = posixpath.dirname(agent_state.rstrip("/")) or "/"
            bind = f"{root}:{root}"
            if bind not in (host.get("Binds") or []):
                host["Binds"] = [*(host.get("Binds") or []), bind]
        host.setdefault("LogConfig", {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
        if spec.health and spec.health.command and "Healthcheck" not in config:
            probe = spec.health
            config["Healthcheck"] = {
                "Test": ["CMD", *probe.command] if probe.command else ["NONE"],
                "Interval": int(probe.interval_secs * _NANOS),
                "Timeout": int(probe.timeout_secs * _NANOS),
                "StartPeriod": int(probe.start_period_secs * _NANOS),
                "Retries": probe.retries,
            }
        return config

    def start(self, module: str) -> None:
        with self._errors("start", module):
            self.client.api.start(self.container_name(module))

    def stop(self, module: str, id: str, timeout: float = 10.0) -> None:
        with self._errors("stop", module):
            try:
                self.client.api.stop(id, timeout=int(timeout))
            except docker.errors.NotFound:
                return

    def remove(self, module: str, id: str) -> None:
        with self._errors("remove", module):
            try:
                self.client.api.remove_container(id, force=True)
            except docker.errors.NotFound:
                return

    def remove_image(self, image: str) -> bool:
        try:
            self.client.api.remove_image(image)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False  # in use by some container, or gone: never force
        return True

    def restart(self, module: str, timeout: float = 10.0) -> None:
        with self._errors("restart", module):
            self.client.api.restart(self.container_name(module), timeout=int(timeout))

    # -- errors --------------------------------------------------------------------------------

    def _errors(self, action: str, module: str) -> _ErrorMap:
        if action in {"start", "stop", "remove", "restart"}:
            self._inspected.clear()
        return _ErrorMap(action, module)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


class _ErrorMap:
    """Context manager translating docker/requests exceptions into Outpost's runtime failures."""

    def __init__(self, action: str, module: str) -> None:
        self.action, self.module = action, module

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, ModuleRuntimeError):
            return False
        where = f"{self.action} {self.module}".strip()
        if isinstance(exc, docker.errors.ImageNotFound):
            raise PermanentError(
                f"{where}: image not present ({_explain(exc)}); build or `docker load` it, or allow pulls "
                "with imagePullPolicy on-create",
                module=self.module,
                action=self.action,
            ) from exc
        if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
            raise PermanentError(
                f"{where}: {_explain(exc)}; a container of that name exists that this agent does not own: "
                "remove or rename it",
                module=self.module,
                action=self.action,
            ) from exc
        if isinstance(exc, docker.errors.APIError) and exc.is_client_error():
            raise PermanentError(
                f"{where}: Docker refused it: {_explain(exc)}; check the module's createOptions",
                module=self.module,
                action=self.action,
            ) from exc
        if isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException):
            raise TemporaryError(
                f"{where}: Docker engine error: {_explain(exc)}; is dockerd running?",
                module=self.module,
                action=self.action,
            ) from exc
        return False
