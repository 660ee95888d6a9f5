"""Every deployment content a rollout can create, computed one way for the signer and the driver.

A rollout makes two kinds of deployment: its layer ``rollout-NAME`` (the candidate model for the
treatment cohort; only its target changes between steps, and targets are not signed) and, on
promotion, ``BASE+NAME`` (the base deployment's content with the candidate model). Both contents
are known when the rollout starts, so ``outpost rollout start --sign-key`` composes them with
:func:`rollout_contents`, signs them with the operator's key, and the driver attaches those
signatures when it pushes the very same contents: what is signed is exactly what is pushed, and
the fleet never holds an operator key. A rollback only deletes the layer (no new content).

Pure, and free of the fleet's libraries (the CLI imports it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LAYER",
    "PROMOTED",
    "RolloutContents",
    "candidate_model",
    "layer_content",
    "promoted_content",
    "rollout_contents",
]

LAYER = "layer"
PROMOTED = "promoted"
DESIRED = "properties.desired"


def candidate_model(
    models_url: str, name: str, version: str, sha256: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """The candidate's desired ``model`` value: the registry's download URL, pinned by sha256."""
    model: dict[str, Any] = {
        "version": version,
        "url": f"{models_url.rstrip('/')}/api/v1/models/{name}/{version}/content",
        "sha256": sha256,
    }
    if metadata.get("features"):
        model["metadata"] = dict(metadata)
    return model


@dataclass(frozen=True)
class RolloutContents:
    """``modulesContent`` of the layer and of the promoted base."""

    layer: dict[str, Any]
    promoted: dict[str, Any]

    def by_kind(self) -> dict[str, dict[str, Any]]:
        return {LAYER: self.layer, PROMOTED: self.promoted}


def layer_content(module: str, model: Mapping[str, Any]) -> dict[str, Any]:
    """The layer's content: ``module``'s desired model, addressed by dot path."""
    return {module: {f"{DESIRED}.model": copy.deepcopy(dict(model))}}


def promoted_content(base_content: Mapping[str, Any], module: str, model: Mapping[str, Any]) -> dict[str, Any]:
    """The base deployment's content with ``module``'s desired model replaced; ``ValueError`` when the
    base sets no desired properties for the module."""
    promoted = copy.deepcopy(dict(base_content))
    entry = promoted.get(module)
    desired = entry.get(DESIRED) if isinstance(entry, dict) else None
    if not isinstance(desired, dict):
        raise ValueError(f"the base content sets no {DESIRED} for module {module!r}")
    desired["model"] = copy.deepcopy(dict(model))
    return promoted


def rollout_contents(base_content: Mapping[str, Any], module: str, model: Mapping[str, Any]) -> RolloutContents:
    """Everything a rollout of ``model`` to ``module`` over this base can push."""
    return RolloutContents(layer_content(module, model), promoted_content(base_content, module, model))
