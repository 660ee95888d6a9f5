"""Typed view of a deployment manifest, for the agent, hub and fleet to read.

Documents are validated by the JSON Schema first (``validation``), which is what reports
errors to users; these models then give typed access. They mirror
``schema/manifest.schema.json`` field for field (a unit test keeps the two in agreement).
Unknown keys are kept where Azure tolerates them (``extra="allow"``) and refused in
Outpost's own ``outpost`` extension blocks.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from outpost.errors import ManifestError
from outpost.manifest import create_options

__all__ = [
    "AgentExtension",
    "AgentModule",
    "AzureUpstream",
    "EdgeAgentDesired",
    "EdgeHubDesired",
    "EnvVar",
    "HealthProbe",
    "HubExtension",
    "HubModule",
    "ImagePullPolicy",
    "KafkaUpstream",
    "Manifest",
    "Module",
    "ModuleExtension",
    "ModuleSettings",
    "ModuleStatus",
    "MqttUpstream",
    "ProcessSpec",
    "RegistryCredential",
    "RestartPolicy",
    "RestartTuning",
    "RollbackSettings",
    "RouteSpec",
    "Runtime",
    "RuntimeSettings",
    "StoreAndForward",
    "StoreExtension",
    "StoreLimits",
    "SystemModules",
    "UpstreamSettings",
]

DEFAULT_STARTUP_ORDER = 4294967295
DEFAULT_ROUTE_PRIORITY = 2_000_000_000
MAX_ROUTE_PRIORITY = 9
AGENT_SCHEMA_VERSION = r"^1\.(0(\.[0-9]+){0,2}|1|1\.0)$"
"""What edgeAgent reads: major 1, at most 1.1.0 (.NET ``Version`` order: 1.1 < 1.1.0 < 1.1.0.0)."""
HUB_SCHEMA_VERSION = r"^1\.[0-3](\.[0-9]+){0,2}$"
"""What edgeHub reads: major 1, minor 0 to 3, any build and revision."""


def _whole(value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``7200.0``; read such a float as the int it is."""
    return int(value) if type(value) is float and value.is_integer() else value


#: An integer as JSON Schema defines it (``7200`` or ``7200.0``, never ``true``).
WholeNumber = Annotated[int, BeforeValidator(_whole)]
#: Key constraints the schema states with ``propertyNames``.
ModuleName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_.-]+$", max_length=64)]
EnvName = Annotated[str, StringConstraints(pattern="^[^=\u0000]+$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
RouteName = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]  # edgeHub refuses blank names
_CHUNK_KEY = re.compile(r"^createOptions[0-9]{2}$")


class _Azure(BaseModel):
    """Azure-defined object: unknown keys are tolerated and kept, as Azure's agent does."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True, strict=True)


class _Ours(BaseModel):
    """Outpost-defined object: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


class ModuleStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class RestartPolicy(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ON_UNHEALTHY = "on-unhealthy"
    ALWAYS = "always"


class ImagePullPolicy(StrEnum):
    ON_CREATE = "on-create"
    NEVER = "never"


# --- Outpost extensions -------------------------------------------------------------------


class ProcessSpec(_Ours):
    command: list[str] = Field(min_length=1)
    working_dir: str | None = Field(default=None, alias="workingDir")
    env: dict[str, str] = Field(default_factory=dict)


class HealthProbe(_Ours):
    http: str | None = Field(default=None, pattern=r"^https?://")
    command: list[str] | None = Field(default=None, min_length=1)
    interval_secs: float = Field(default=10.0, alias="intervalSecs", gt=0)
    timeout_secs: float = Field(default=5.0, alias="timeoutSecs", gt=0)
    start_period_secs: float = Field(default=0.0, alias="startPeriodSecs", ge=0)
    retries: WholeNumber = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _one_probe(self) -> HealthProbe:
        if (self.http is None) == (self.command is None):
            raise ValueError("give exactly one of http or command")
        return self


class RestartTuning(_Ours):
    cool_off_secs: float | None = Field(default=None, alias="coolOffSecs", gt=0)
    max_backoff_secs: float | None = Field(default=None, alias="maxBackoffSecs", gt=0)
    max_restarts: WholeNumber | None = Field(default=None, alias="maxRestarts", ge=0)
    healthy_reset_mins: float | None = Field(default=None, alias="healthyResetMins", gt=0)


class ModuleExtension(_Ours):
    process: ProcessSpec | None = None
    health: HealthProbe | None = None
    restart: RestartTuning | None = None


class RollbackSettings(_Ours):
    enabled: bool = True
    health_window_secs: float = Field(default=60.0, alias="healthWindowSecs", gt=0)


class ImageRetention(_Ours):
    keep_per_module: WholeNumber = Field(default=2, alias="keepPerModule", ge=1)


class AgentExtension(_Ours):
    restart: RestartTuning | None = None
    rollback: RollbackSettings | None = None
    images: ImageRetention | None = None


class KafkaUpstream(_Ours):
    bootstrap_servers: str = Field(alias="bootstrapServers", min_length=1)
    topic: str | None = Field(default=None, min_length=1)
    topic_by_output: dict[str, NonEmpty] = Field(default_factory=dict, alias="topicByOutput")


class MqttUpstream(_Ours):
    host: str = Field(min_length=1)
    port: WholeNumber | None = Field(default=None, ge=1, le=65535)
    topic: str | None = Field(default=None, min_length=1)
    tls: bool | None = None
    client_id: str | None = Field(default=None, alias="clientId")


class AzureUpstream(_Ours):
    connection_string_env: str = Field(alias="connectionStringEnv", min_length=1)


class UpstreamSettings(_Ours):
    sink: Literal["none", "kafka", "mqtt", "azure"]
    kafka: KafkaUpstream | None = None
    mqtt: MqttUpstream | None = None
    azure: AzureUpstream | None = None


class StoreExtension(_Ours):
    max_size_bytes: WholeNumber | None = Field(default=None, alias="maxSizeBytes", ge=1)
    full_policy: Literal["reject-new", "drop-oldest"] | None = Field(default=None, alias="fullPolicy")


class HubExtension(_Ours):
    leaf_devices: list[Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]+$", max_length=128)]] | None = Field(
        default=None, alias="leafDevices"
    )
    upstream: UpstreamSettings | None = None
    store: StoreExtension | None = None

    @field_validator("leaf_devices")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("leaf device ids must be unique")
        return value


# --- $edgeAgent ---------------------------------------------------------------------------


class RegistryCredential(_Azure):
    username: str
    password: str = Field(repr=False)
    address: str = Field(min_length=1)


class RuntimeSettings(_Azure):
    min_docker_version: str | None = Field(default=None, alias="minDockerVersion")
    logging_options: str | None = Field(default=None, alias="loggingOptions")
    registry_credentials: dict[str, RegistryCredential] = Field(default_factory=dict, alias="registryCredentials")


class Runtime(_Azure):
    type: Literal["docker"]
    settings: RuntimeSettings = Field(default_factory=RuntimeSettings)  # edgeAgent: optional


class EnvVar(_Azure):
    value: str | int | float | bool

    def text(self) -> str:
        """The value as a process would see it (JSON spelling for booleans)."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value)


class ModuleSettings(_Azure):
    """``settings``; ``createOptions`` chunks (``createOptions01``...) stay in the extras."""

    image: str = Field(min_length=1)
    create_options: str | dict[str, Any] | None = Field(default=None, alias="createOptions")

    @model_validator(mode="after")
    def _chunks_are_strings(self) -> ModuleSettings:
        for key, value in (self.model_extra or {}).items():
            if _CHUNK_KEY.match(key) and not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
        return self

    def docker_create_options(self) -> dict[str, Any]:
        """Docker ``ContainerCreate`` options with chunks joined; the manifest was checked already."""
        raw = self.model_dump(by_alias=True, exclude_none=True)
        joined, problems = create_options.join_chunks(raw, "/settings")
        if problems:  # a partial join is not the user's JSON: do not report its parse error too
            raise ManifestError(problems)
        options, bad, _ = create_options.parse_create_options(joined, "/settings/createOptions")
        if bad:
            raise ManifestError(bad)
        return options


class AgentModule(_Azure):
    type: Literal["docker"]
    settings: ModuleSettings
    env: dict[EnvName, EnvVar] = Field(default_factory=dict)
    image_pull_policy: ImagePullPolicy = Field(default=ImagePullPolicy.ON_CREATE, alias="imagePullPolicy")
    outpost: ModuleExtension | None = None


class HubModule(_Azure):
    type: Literal["docker"]
    settings: ModuleSettings
    status: Literal[ModuleStatus.RUNNING]
    restart_policy: Literal[RestartPolicy.ALWAYS] = Field(default=RestartPolicy.ALWAYS, alias="restartPolicy")
    env: dict[EnvName, EnvVar] = Field(default_factory=dict)
    startup_order: WholeNumber = Field(default=0, alias="startupOrder", ge=0, le=DEFAULT_STARTUP_ORDER)
    image_pull_policy: ImagePullPolicy = Field(default=ImagePullPolicy.ON_CREATE, alias="imagePullPolicy")
    outpost: ModuleExtension | None = None


class Module(_Azure):
    version: str | None = None  # edgeAgent treats it as optional
    type: Literal["docker"]
    status: ModuleStatus
    restart_policy: RestartPolicy = Field(
        default=RestartPolicy.ON_UNHEALTHY, alias="restartPolicy"
    )  # edgeAgent's default
    settings: ModuleSettings
    startup_order: WholeNumber = Field(
        default=DEFAULT_STARTUP_ORDER, alias="startupOrder", ge=0, le=DEFAULT_STARTUP_ORDER
    )
    image_pull_policy: ImagePullPolicy = Field(default=ImagePullPolicy.ON_CREATE, alias="imagePullPolicy")
    env: dict[EnvName, EnvVar] = Field(default_factory=dict)
    outpost: ModuleExtension | None = None


class SystemModules(_Ours):
    edge_agent: AgentModule = Field(alias="edgeAgent")
    edge_hub: HubModule = Field(alias="edgeHub")


class EdgeAgentDesired(_Azure):
    schema_version: str = Field(alias="schemaVersion", pattern=AGENT_SCHEMA_VERSION)
    runtime: Runtime
    system_modules: SystemModules = Field(alias="systemModules")
    modules: dict[ModuleName, Module] = Field(default_factory=dict)  # edgeAgent: optional (none)
    outpost: AgentExtension | None = None


# --- $edgeHub -----------------------------------------------------------------------------


class RouteSpec(_Ours):
    """A route in object form; string routes are normalised to this with the defaults."""

    route: str
    priority: WholeNumber = Field(default=DEFAULT_ROUTE_PRIORITY, ge=0, le=MAX_ROUTE_PRIORITY)
    time_to_live_secs: WholeNumber | None = Field(default=None, alias="timeToLiveSecs", ge=0)
    recency: dict[str, Any] | None = Field(default=None, alias="Recency")


class StoreLimits(_Azure):
    max_size_bytes: WholeNumber | None = Field(default=None, alias="maxSizeBytes", ge=1)


class StoreAndForward(_Azure):
    time_to_live_secs: WholeNumber = Field(alias="timeToLiveSecs", ge=0)
    store_limits: StoreLimits | None = Field(default=None, alias="storeLimits")


class EdgeHubDesired(_Azure):
    schema_version: str = Field(alias="schemaVersion", pattern=HUB_SCHEMA_VERSION)
    routes: dict[RouteName, str | RouteSpec | None] = Field(default_factory=dict)  # optional under schemaVersion 1.0
    store_and_forward_configuration: StoreAndForward = Field(alias="storeAndForwardConfiguration")
    mqtt_broker: dict[str, Any] | None = Field(default=None, alias="mqttBroker")
    outpost: HubExtension | None = None

    @model_validator(mode="after")
    def _routes_from_1_1(self) -> EdgeHubDesired:
        if "routes" not in self.model_fields_set and re.match(r"1\.0(\.|$)", self.schema_version) is None:
            raise ValueError("routes is required from schemaVersion 1.1 on (edgeHub reads 1.0 without them)")
        return self

    def route_specs(self) -> dict[str, RouteSpec]:
        """Every route in object form, string routes taking the default priority and TTL.

        Blank and null routes are left out: edgeHub skips them under schema 1.0 (the check
        refuses them under later versions, so only 1.0 manifests get here with one).
        """
        specs = {
            name: spec if isinstance(spec, RouteSpec) else RouteSpec(route=spec)
            for name, spec in self.routes.items()
            if spec is not None
        }
        return {name: spec for name, spec in specs.items() if spec.route.strip()}


# --- the whole manifest -------------------------------------------------------------------


class Manifest(_Azure):
    """A validated manifest: agent and hub desired properties plus each module's twin desired."""

    edge_agent: EdgeAgentDesired
    edge_hub: EdgeHubDesired
    module_twins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    document: dict[str, Any] = Field(default_factory=dict, repr=False)

    def all_modules(self) -> dict[str, AgentModule | HubModule | Module]:
        """System modules (edgeAgent excluded: it is us) followed by user modules."""
        result: dict[str, AgentModule | HubModule | Module] = {"edgeHub": self.edge_agent.system_modules.edge_hub}
        result.update(self.edge_agent.modules)
        return result
