"""The agent's reported properties, in the shape Azure's edgeAgent reports them.

Azure fields keep their names and meaning (``lastDesiredVersion``, ``lastDesiredStatus``,
``runtime.platform``, per module ``runtimeStatus``, ``exitCode``, ``restartCount``...), so
tools that read an edgeAgent twin read ours; Outpost's additions live under ``outpost``.
Built by the reconciler after every round and stored in the state dir for ``outpost list``
and, later, the fleet service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from outpost.agent.failures import CommandFailure
from outpost.agent.observed import ModuleState, Observed
from outpost.agent.restarts import RestartRecord, RuntimeStatus, runtime_status
from outpost.agent.spec import Desired

__all__ = ["DeploymentStatus", "StatusCode", "refusal_of", "reported", "utc"]


class StatusCode(IntEnum):
    """``lastDesiredStatus.code`` values Azure defines."""

    OK = 200
    BAD_CONFIG = 400
    UNKNOWN = 406
    BAD_SCHEMA_VERSION = 412
    EMPTY_CONFIG = 417
    FAILED = 500


@dataclass(frozen=True)
class DeploymentStatus:
    """Where the last deployment attempt stands."""

    version: int
    code: StatusCode
    description: str = ""
    deployment_id: str = ""
    rolled_back_to: str = ""
    converging: bool = False
    refused_from: str = ""  # the source whose new deployment was refused (``outpost.refusal``)


def utc(timestamp: float | None) -> str | None:
    """POSIX seconds as Azure's ISO 8601 UTC text (``2024-05-01T10:20:30.123Z``)."""
    if timestamp is None:
        return None
    text = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _module(
    name: str,
    desired: Desired,
    state: ModuleState | None,
    record: RestartRecord,
    now: float,
    *,
    failure: CommandFailure | None = None,
) -> dict[str, Any]:
    spec = desired.modules.get(name)
    status = runtime_status(spec, state, record, now)
    if state is None and failure is not None:
        status = RuntimeStatus.FAILED if failure.permanent else RuntimeStatus.BACKOFF
    entry: dict[str, Any] = {
        "runtimeStatus": status.value,
        "restartCount": record.count,
        "lastRestartTimeUtc": utc(record.last_restart),
    }
    if spec is not None:
        entry |= {
            "version": spec.version,
            "type": "docker",
            "status": spec.status.value,
            "restartPolicy": spec.restart_policy.value,
            "startupOrder": spec.startup_order,
            "settings": {"image": spec.image},
        }
    if state is not None:
        entry["settings"] = {**entry.get("settings", {}), "imageHash": state.image_id}
        entry |= {
            "exitCode": state.exit_code,
            "lastStartTimeUtc": utc(state.started_at),
            "lastExitTimeUtc": utc(state.finished_at),
            "statusDescription": _describe(status, state),
        }
    else:
        entry["statusDescription"] = "not created yet"
    if failure is not None:
        entry["lastFailure"] = {
            "action": failure.action,
            "error": failure.error,
            "permanent": failure.permanent,
            "attempts": failure.retry.failures,
            "atUtc": utc(failure.at),
            "nextAttemptUtc": utc(failure.retry.due_at),
        }
        then = (
            f"next attempt at {utc(failure.retry.due_at)}" if failure.retry.due_at is not None
            else f"waiting for a new deployment or `outpost restart {name}`"
        )  # fmt: skip
        entry["statusDescription"] = f"{failure.action} failed: {failure.error}; {then}"
    return entry


def _describe(status: RuntimeStatus, state: ModuleState) -> str:
    match status:
        case RuntimeStatus.RUNNING:
            return "running" + (f" ({state.health.value})" if state.health.value != "none" else "")
        case RuntimeStatus.UNHEALTHY:
            return "running but its health check fails"
        case RuntimeStatus.BACKOFF:
            return f"exited with code {state.exit_code}; waiting to restart"
        case RuntimeStatus.FAILED:
            return f"exited with code {state.exit_code}; not restarted (restart limit or policy)"
        case RuntimeStatus.STOPPED:
            return "stopped" if state.exit_code in (None, 0) else f"exited with code {state.exit_code}"
    return state.state.value


def refusal_of(deployment: DeploymentStatus) -> dict[str, Any]:
    """``outpost.refusal`` while the last new deployment was refused (as a refused bundle records it)."""
    if not deployment.refused_from:
        return {}
    return {"refusal": {"source": deployment.refused_from, "reason": deployment.description}}


def reported(
    *,
    desired: Desired,
    observed: Observed,
    records: Mapping[str, RestartRecord],
    now: float,
    deployment: DeploymentStatus,
    platform: Mapping[str, str],
    runtime_kind: str,
    failures: Mapping[str, CommandFailure] | None = None,
) -> dict[str, Any]:
    """The whole reported document for one moment; ``failures``: each module's last failed command."""
    failures = failures or {}
    names = sorted(set(desired.modules) | set(observed.modules))
    modules = {
        name: _module(
            name,
            desired,
            observed.modules.get(name),
            records.get(name, RestartRecord()),
            now,
            failure=failures.get(name),
        )
        for name in names
    }
    system = {"edgeHub": modules.pop("edgeHub")} if "edgeHub" in modules else {}
    return {
        "schemaVersion": "1.1",
        "lastDesiredVersion": deployment.version,
        "lastDesiredStatus": {"code": int(deployment.code), "description": deployment.description},
        "runtime": {"type": runtime_kind, "platform": dict(platform)},
        "systemModules": system,
        "modules": modules,
        "outpost": {
            "deploymentId": deployment.deployment_id,
            "rolledBackTo": deployment.rolled_back_to or None,
            "converging": deployment.converging,
            "reportedAtUtc": utc(now),
            **refusal_of(deployment),
        },
    }
