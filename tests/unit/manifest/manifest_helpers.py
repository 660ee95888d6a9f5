"""Shared paths and builders for the manifest tests (imported by the test modules here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from outpost.errors import ManifestError
from outpost.manifest import is_layered, parse_json

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / "tests" / "corpus"
VALID = sorted(p for p in (CORPUS / "valid").glob("*.json") if not p.name.endswith(".expected.json"))
INVALID = sorted(p for p in (CORPUS / "invalid").glob("*.json") if not p.name.endswith(".expected.json"))
SHIPPED = sorted(
    p for p in (REPO / "manifests").rglob("*.json") if "schema" not in p.relative_to(REPO / "manifests").parts
)

AGENT = "/modulesContent/$edgeAgent/properties.desired"
HUB = "/modulesContent/$edgeHub/properties.desired"


def ids(paths: list[Path]) -> list[str]:
    """Readable test ids: the path below tests/corpus or the repository."""
    return [str(p.relative_to(CORPUS if CORPUS in p.parents else REPO)) for p in paths]


def load(path: Path) -> Any:
    return parse_json(path.read_bytes())


def is_plain_manifest(path: Path) -> bool:
    """A whole manifest (not a deployment wrapper, not a layer) that is at least valid JSON."""
    try:
        doc = load(path)
    except ManifestError:
        return False
    content = doc.get("modulesContent") if isinstance(doc, dict) else None
    return isinstance(doc, dict) and "content" not in doc and not (isinstance(content, dict) and is_layered(content))


def expected(path: Path, key: str = "problems") -> list[dict[str, str]]:
    """The sidecar ``NAME.expected.json`` of a corpus file: pointers and message parts.

    Invalid files list ``problems``; a valid file may list the ``warnings`` it must give.
    """
    sidecar = path.with_name(path.stem + ".expected.json")
    if not sidecar.exists():
        return []
    listed: list[dict[str, str]] = json.loads(sidecar.read_text(encoding="utf-8")).get(key, [])
    return listed


_MANIFEST: dict[str, Any] = {
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25", "loggingOptions": ""}},
                "systemModules": {
                    "edgeAgent": {
                        "type": "docker",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": "{}"},
                    },
                    "edgeHub": {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": "{}"},
                    },
                },
                "modules": {
                    "sensor": {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": "contosoacr.azurecr.io/sensor:1.0.0", "createOptions": "{}"},
                    },
                    "filter": {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "on-failure",
                        "settings": {"image": "contosoacr.azurecr.io/filter:1.0.0", "createOptions": "{}"},
                    },
                },
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "routes": {
                    "sensorToFilter": "FROM /messages/modules/sensor/outputs/out"
                    ' INTO BrokeredEndpoint("/modules/filter/inputs/in")',
                    "filterUp": {"route": "FROM /messages/modules/filter/outputs/* INTO $upstream", "priority": 1},
                },
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            }
        },
        "filter": {"properties.desired": {"threshold": 25, "unit": "C"}},
    }
}


def manifest() -> dict[str, Any]:
    """A fresh small valid manifest: modules ``sensor`` and ``filter``, two routes, one twin."""
    return copy.deepcopy(_MANIFEST)


def agent(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    return result


def hub(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    return result


def module(doc: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = agent(doc)["modules"][name]
    return result
