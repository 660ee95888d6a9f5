"""Device and module twins in IoT Hub's JSON shape, built from the fleet's records.

Target conditions and metrics queries read these documents, and the API returns them, so
a twin looks the same to a condition, an operator and a script. Called by
:mod:`outpost.fleet.service` and :mod:`outpost.fleet.status`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from outpost.fleet.models import DeviceRecord, ModuleTwin

__all__ = ["device_twin", "module_twin", "twin_with_modules"]


def device_twin(device: DeviceRecord) -> dict[str, Any]:
    return {
        "deviceId": device.id,
        "status": device.status.value,
        "activated": device.activated,
        "version": device.version,
        "tags": device.tags,
        "properties": {"desired": device.desired, "reported": device.reported},
        "lastActivityTime": device.last_activity,
        "createdTimeUtc": device.created,
    }


def module_twin(device: DeviceRecord, module: ModuleTwin) -> dict[str, Any]:
    signed = {"desiredSignatures": list(module.desired_signatures)} if module.desired_signatures else {}
    return {
        "deviceId": device.id,
        "moduleId": module.module_id,
        "status": device.status.value,
        "properties": {
            "desired": {**module.desired, "$version": module.desired_version},
            "reported": {**module.reported, "$version": module.reported_version},
        },
        **signed,
    }


def twin_with_modules(device: DeviceRecord, modules: Iterable[ModuleTwin]) -> dict[str, Any]:
    """The device twin plus ``modules``: every module twin by id (``outpost device show``)."""
    return {
        **device_twin(device),
        "modules": {m.module_id: module_twin(device, m) for m in sorted(modules, key=lambda m: m.module_id)},
    }
