"""What the agent wants running: one :class:`ModuleSpec` per module, derived from a manifest.

A spec holds everything a runtime needs to create the module, already resolved (create
options joined and parsed, env as strings, restart tuning with defaults). ``config_hash``
covers exactly what requires re-creating the container; status and restart policy are
enforced by the agent itself and do not. Built by ``Desired.from_manifest``; read by the
planner and the runtimes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outpost import backoff
from outpost.manifest import Manifest
from outpost.manifest.models import (
    HealthProbe,
    ImagePullPolicy,
    ModuleStatus,
    ProcessSpec,
    RestartPolicy,
    RestartTuning,
)

__all__ = ["Backoff", "Desired", "ModuleSpec", "RegistryAuth"]


@dataclass(frozen=True)
class Backoff:
    """Restart policy limits (Azure's defaults); waits are a ``backoff.Backoff``: min(cool_off * 2**n, max_wait)."""

    cool_off_secs: float = 10.0
    max_backoff_secs: float = 300.0
    max_restarts: int = 20
    healthy_reset_secs: float = 600.0

    def merged(self, tuning: RestartTuning | None) -> Backoff:
        """These settings overridden by whatever ``tuning`` sets."""
        if tuning is None:
            return self
        return Backoff(
            cool_off_secs=tuning.cool_off_secs if tuning.cool_off_secs is not None else self.cool_off_secs,
            max_backoff_secs=tuning.max_backoff_secs if tuning.max_backoff_secs is not None else self.max_backoff_secs,
            max_restarts=tuning.max_restarts if tuning.max_restarts is not None else self.max_restarts,
            healthy_reset_secs=(
                tuning.healthy_reset_mins * 60 if tuning.healthy_reset_mins is not None else self.healthy_reset_secs
            ),
        )

    def delay(self, restart_count: int) -> float:
        """Seconds to wait before restart number ``restart_count + 1``."""
        return backoff.Backoff(self.cool_off_secs, self.max_backoff_secs).delay(restart_count + 1)


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry address, from ``runtime.settings.registryCredentials``."""

    address: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ModuleSpec:
    """One module as the agent wants it."""

    name: str
    image: str
    version: str = ""
    create_options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    status: ModuleStatus = ModuleStatus.RUNNING
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    startup_order: int = 4294967295
    pull_policy: ImagePullPolicy = ImagePullPolicy.ON_CREATE
    backoff: Backoff = Backoff()
    health: HealthProbe | None = None
    process: ProcessSpec | None = None

    @property
    def config_hash(self) -> str:
        """Hash of what a running container is made from; a change means re-create."""
        material = {
            "image": self.image,
            "createOptions": self.create_options,
            "env": dict(sorted(self.env.items())),
            "process": self.process.model_dump(mode="json") if self.process else None,
            "health": self.health.model_dump(mode="json") if self.health else None,
        }
        text = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Desired:
    """The whole desired state: modules by name, plus registry credentials and a deployment id."""

    deployment_id: str
    modules: Mapping[str, ModuleSpec]
    registries: tuple[RegistryAuth, ...] = ()

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        *,
        deployment_id: str,
        module_env: Callable[[str], Mapping[str, str]] | None = None,
    ) -> Desired:
        """Resolve a validated manifest; ``module_env(name)`` adds the agent's variables (identity,
        hub address, credentials); the manifest's own ``env`` wins over them."""
        agent = manifest.edge_agent
        base = Backoff().merged(agent.outpost.restart if agent.outpost else None)
        modules: dict[str, ModuleSpec] = {}
        for name, module in manifest.all_modules().items():
            ext = module.outpost
            env = {key: var.text() for key, var in module.env.items()}
            env = {"IOTEDGE_MODULEID": name, **(module_env(name) if module_env else {}), **env}
            modules[name] = ModuleSpec(
                name=name,
                image=module.settings.image,
                version=getattr(module, "version", ""),
                create_options=module.settings.docker_create_options(),
                env=env,
                status=ModuleStatus(getattr(module, "status", ModuleStatus.RUNNING)),
                restart_policy=RestartPolicy(getattr(module, "restart_policy", RestartPolicy.ALWAYS)),
                startup_order=getattr(module, "startup_order", 0),
                pull_policy=module.image_pull_policy,
                backoff=base.merged(ext.restart if ext else None),
                health=ext.health if ext else None,
                process=ext.process if ext else None,
            )
        registries = tuple(
            RegistryAuth(address=cred.address, username=cred.username, password=cred.password)
            for cred in agent.runtime.settings.registry_credentials.values()
        )
        return cls(deployment_id=deployment_id, modules=modules, registries=registries)

    def auth_for(self, image: str) -> RegistryAuth | None:
        """The credentials whose address the image reference starts with, if any."""
        for auth in self.registries:
            if image.startswith(auth.address.rstrip("/") + "/"):
                return auth
        return None
