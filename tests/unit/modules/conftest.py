"""Puts the reference-application modules (``modules/<name>/``) and ``ci/model`` on ``sys.path`` so their
packages import as they do inside their images (``python3 -m motor_sensor`` from the module folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MODULES = ("motor-sensor", "fft-filter", "anomaly-detector", "alert-actuator")
for _path in [*(REPO / "modules" / m for m in MODULES), REPO / "ci" / "model"]:
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

DATA = Path(__file__).resolve().parent / "data"
BUNDLED = REPO / "modules" / "anomaly-detector" / "anomaly_detector" / "models" / "motor-v1.tflite"
FLOAT_MODEL = REPO / "ci" / "model" / "artifacts" / "motor-v1-float.tflite"
WRONG_SHAPE = DATA / "wrong-shape.tflite"


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    return BUNDLED


@pytest.fixture(scope="session")
def float_model() -> Path:
    return FLOAT_MODEL


@pytest.fixture(scope="session")
def wrong_shape_model() -> Path:
    return WRONG_SHAPE
