"""Module twins on the device: desired properties from the manifest, reported ones from modules.

Desired properties are published retained (full document with ``$version``) so a module gets
them whenever it connects, and as a patch (changed keys; removed keys as ``null``, Azure's patch
semantics) when a deployment changes them. Versions and reported properties are kept in the
hub's state dir, so they survive restarts. Leaf devices listed in ``$edgeHub``
``outpost.leafDevices`` get the same, on their own device-scoped topics (``devices/L/twin/...``),
with desired properties from ``modulesContent.L``. Called by ``service.HubService``.
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

__all__ = ["LEAF_PREFIX", "Twins", "desired_patch"]

#: Version keys of leaf devices in ``desired.json`` (module ids never contain ':').
LEAF_PREFIX = "leaf:"

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

    def _desired_topics(self, key: str) -> tuple[str, str]:
        """(full document, patch) topics of a version key: a module id, or ``leaf:`` + a leaf's id."""
        if key.startswith(LEAF_PREFIX):
            leaf = key[len(LEAF_PREFIX) :]
            return topics.leaf_topic(leaf, topics.LeafChannel.DESIRED), topics.leaf_topic(
                leaf, topics.LeafChannel.DESIRED_PATCH
            )
        return topics.desired(self.device, key), topics.desired_patch(self.device, key)

    def publish_desired(
        self, desired: Mapping[str, Mapping[str, Any]], leaves: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Publish every module's (and leaf device's) desired properties; bump versions and send
        patches on change."""
        wanted = {**desired, **{LEAF_PREFIX + leaf: props for leaf, props in (leaves or {}).items()}}
        with self._lock:
            known = self._versions()
            for key, props in wanted.items():
                full, patch_topic = self._desired_topics(key)
                previous = known.get(key)
                version = int(previous["version"]) if previous else 1
                if previous and previous["desired"] != props:
                    version += 1
                    patch = desired_patch(previous["desired"], props)
                    patch["$version"] = version
                    self.link.publish(patch_topic, json.dumps(patch).encode(), qos=1)
                document = {**props, "$version": version}
                self.link.publish(full, json.dumps(document).encode(), qos=1, retain=True)
                known[key] = {"version": version, "desired": dict(props)}
            for key in [k for k in known if k not in wanted]:
                self.link.publish(self._desired_topics(key)[0], b"", qos=1, retain=True)  # clears it
                del known[key]
            _write(self.dir / "desired.json", known)

    def _reported_path(self, module: str, leaf: bool) -> Path:
        return self.dir / "leaves" / f"reported-{module}.json" if leaf else self.dir / f"reported-{module}.json"

    def reported(self, module: str, payload: bytes, *, leaf: bool = False) -> None:
        """Merge a module's (or leaf device's) reported-properties patch into what is kept for it."""
        try:
            patch = json.loads(payload)
        except ValueError:
            log.warning("%s %s reported properties that are not JSON; ignored", "leaf" if leaf else "module", module)
            return
        if not isinstance(patch, dict):
            return
        with self._lock:
            path = self._reported_path(module, leaf)
            path.parent.mkdir(exist_ok=True)
            _write(path, merge_patch(self.reported_of(module, leaf=leaf), patch))

    def reported_of(self, module: str, *, leaf: bool = False) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._reported_path(module, leaf).read_text())
        except (OSError, ValueError):
            return {}
        return data
