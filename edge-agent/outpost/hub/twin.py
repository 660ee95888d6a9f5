"""Module twins on the device: desired properties from the manifest, reported ones from modules.

Desired properties are published retained (full document with ``$version``) so a module gets
them whenever it connects, and as a patch (changed keys; removed keys as ``null``, Azure's patch
semantics) when a deployment changes them. Versions and reported properties are kept in the
hub's state dir, so they survive restarts. Called by ``service.HubService``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from outpost.files import write_atomic
from outpost.wire import topics
from outpost.wire.link import Link
from outpost.wire.patch import merge_patch

__all__ = ["Twins", "desired_patch"]

log = logging.getLogger(__name__)


def desired_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys that changed (with their new value) and removed keys (as None)."""
    patch = {key: value for key, value in new.items() if old.get(key, object()) != value}
    patch.update({key: None for key in old if key not in new})
    return patch


def _write(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True), 0o600)


class Twins:
    """Desired publisher and reported store for one device."""

    def __init__(self, link: Link, device: str, state_dir: Path) -> None:
        self.link = link
        self.device = device
        self.dir = state_dir / "twins"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _versions(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / "desired.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def publish_desired(self, desired: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish every module's desired properties; bump versions and send patches on change."""
        with self._lock:
            known = self._versions()
            for module, props in desired.items():
                previous = known.get(module)
                version = int(previous["version"]) if previous else 1
                if previous and previous["desired"] != props:
                    version += 1
                    patch = desired_patch(previous["desired"], props)
                    patch["$version"] = version
                    self.link.publish(topics.desired_patch(self.device, module), json.dumps(patch).encode(), qos=1)
                document = {**props, "$version": version}
                self.link.publish(
                    topics.desired(self.device, module), json.dumps(document).encode(), qos=1, retain=True
                )
                known[module] = {"version": version, "desired": dict(props)}
            for module in [m for m in known if m not in desired]:
                self.link.publish(topics.desired(self.device, module), b"", qos=1, retain=True)  # clears it
                del known[module]
            _write(self.dir / "desired.json", known)

    def reported(self, module: str, payload: bytes) -> None:
        """Merge a module's reported-properties patch into what is kept for it."""
        try:
            patch = json.loads(payload)
        except ValueError:
            log.warning("module %s reported properties that are not JSON; ignored", module)
            return
        if not isinstance(patch, dict):
            return
        with self._lock:
            _write(self.dir / f"reported-{module}.json", merge_patch(self.reported_of(module), patch))

    def reported_of(self, module: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / f"reported-{module}.json").read_text())
        except (OSError, ValueError):
            return {}
        return data
