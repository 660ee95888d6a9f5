"""From a ``features`` message to the model's input vector (pure numpy; shared with ``ci/model/train.py``).

A model's metadata (``motor-v1.json``) names its inputs in order, each as a path into the features
message and a transform, and the normalisation the network was trained with::

    "features": [
      {"name": "current_rms", "path": ["current"], "transform": "identity", "unit": "A"},
      {"name": "temperature", "path": ["temperature"], "transform": "identity", "unit": "degC"},
      {"name": "vibration_bearing_band", "path": ["fft_data", "vibration", "bands", "80-200"],
       "transform": "log10", "unit": "log10(g^2)"},
      {"name": "sound_hf_band", "path": ["fft_data", "sound", "bands", "2000-4000"],
       "transform": "log10", "unit": "log10(Pa^2)"}
    ],
    "normalization": {"mean": [...], "std": [...], "clip": 10.0}

``vector = clip((transform(value) - mean) / std, -clip, clip)``, as float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

TRANSFORMS: tuple[str, ...] = ("identity", "log10")
LOG_FLOOR = 1e-12


class InputError(ValueError):
    """A features message lacks what the model needs, or metadata is malformed; the text names the field."""


@dataclass(frozen=True)
class Feature:
    name: str
    path: tuple[str, ...]
    transform: str = "identity"
    unit: str = ""

    def raw_value(self, message: Mapping[str, Any]) -> float:
        node: Any = message
        for i, key in enumerate(self.path):
            if not isinstance(node, Mapping) or key not in node:
                where = ".".join(self.path[: i + 1])
                raise InputError(f"{where}: missing from the features message (model input {self.name!r})")
            node = node[key]
        if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
            raise InputError(f"{'.'.join(self.path)}: expected a finite number, got {node!r}")
        return float(node)

    def value(self, message: Mapping[str, Any]) -> float:
        raw = self.raw_value(message)
        if self.transform == "log10":
            return math.log10(max(raw, LOG_FLOOR))
        return raw


@dataclass(frozen=True)
class InputSpec:
    """The ordered model inputs and their normalisation."""

    features: tuple[Feature, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: float = 10.0

    @property
    def size(self) -> int:
        return len(self.features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def raw_vector(self, message: Mapping[str, Any]) -> npt.NDArray[np.float64]:
        """Transformed, not yet normalised, values in model order."""
        return np.array([f.value(message) for f in self.features], dtype=np.float64)

    def normalize(self, raw: npt.ArrayLike) -> npt.NDArray[np.float32]:
        z = (np.asarray(raw, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        out: npt.NDArray[np.float32] = np.clip(z, -self.clip, self.clip).astype(np.float32)
        return out

    def vector(self, message: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        return self.normalize(self.raw_vector(message))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": [
                {"name": f.name, "path": list(f.path), "transform": f.transform, "unit": f.unit} for f in self.features
            ],
            "normalization": {"mean": list(self.mean), "std": list(self.std), "clip": self.clip},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> InputSpec:
        """From a model's metadata document (``features`` + ``normalization``)."""
        items = doc.get("features")
        if not isinstance(items, Sequence) or isinstance(items, str) or not items:
            raise InputError("features: expected a non-empty list")
        features = []
        for i, item in enumerate(items):
            where = f"features[{i}]"
            if not isinstance(item, Mapping):
                raise InputError(f"{where}: expected an object")
            path = item.get("path")
            if (
                not isinstance(path, Sequence)
                or isinstance(path, str)
                or not path
                or not all(isinstance(p, str) for p in path)
            ):
                raise InputError(f"{where}.path: expected a non-empty list of keys")
            transform = item.get("transform", "identity")
            if transform not in TRANSFORMS:
                raise InputError(f"{where}.transform: {transform!r} is not one of {', '.join(TRANSFORMS)}")
            features.append(
                Feature(
                    name=str(item.get("name", ".".join(path))),
                    path=tuple(path),
                    transform=transform,
                    unit=str(item.get("unit", "")),
                )
            )
        norm = doc.get("normalization")
        if not isinstance(norm, Mapping):
            raise InputError("normalization: expected an object with mean, std and clip")
        mean, std = norm.get("mean"), norm.get("std")
        for key, values in (("mean", mean), ("std", std)):
            if (
                not isinstance(values, Sequence)
                or len(values) != len(features)
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            ):
                raise InputError(f"normalization.{key}: expected {len(features)} finite numbers")
        assert isinstance(mean, Sequence)
        assert isinstance(std, Sequence)
        if any(v <= 0 for v in std):
            raise InputError("normalization.std: every value must be > 0")
        clip = norm.get("clip", 10.0)
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0:
            raise InputError(f"normalization.clip: expected a positive number, got {clip!r}")
        return cls(
            features=tuple(features),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            clip=float(clip),
        )


#: The four inputs of the motor model (see docs/reference-app.md); normalisation comes from training.
MOTOR_FEATURES: tuple[Feature, ...] = (
    Feature("current_rms", ("current",), "identity", "A"),
    Feature("temperature", ("temperature",), "identity", "degC"),
    Feature("vibration_bearing_band", ("fft_data", "vibration", "bands", "80-200"), "log10", "log10(g^2)"),
    Feature("sound_hf_band", ("fft_data", "sound", "bands", "2000-4000"), "log10", "log10(Pa^2)"),
)
