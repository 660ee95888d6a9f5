"""The shipped model, through LiteRT, on freshly simulated data (seeds never used in training)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import motor_dataset as ds
import numpy as np
import pytest
from anomaly_detector.inputs import MOTOR_FEATURES, InputSpec
from anomaly_detector.model import LoadedModel

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def spec(bundled_model: Path) -> InputSpec:
    return InputSpec.from_json(json.loads(bundled_model.with_suffix(".json").read_text()))


@pytest.fixture(scope="module")
def int8(bundled_model: Path, spec: InputSpec) -> LoadedModel:
    return LoadedModel(bundled_model.read_bytes(), version="1", spec=spec, edgetpu="off")


@pytest.fixture(scope="module")
def floating(float_model: Path, spec: InputSpec) -> LoadedModel:
    return LoadedModel(float_model.read_bytes(), version="1-float", spec=spec, edgetpu="off")


@pytest.fixture(scope="module")
def fresh() -> tuple[list[ds.Episode], ds.Dataset]:
    """Per kind: full-severity and lower-severity episodes at other loads/ambients, fault from 5 s on."""
    episodes = ds.make_episodes(
        {"healthy": 4, "bearing_wear": 2, "overheating": 2, "stall": 2},
        seed=777,
        severity=(0.6, 1.0),
        start=(5.0, 5.0),
    )
    episodes += [ds.Episode("healthy", seed=5, load=1.0, ambient_c=35.0)]  # the hottest healthy motor
    return episodes, ds.build(episodes, 80)


def scores(model: LoadedModel, spec: InputSpec, x: np.ndarray) -> np.ndarray:
    return np.array([model.predict(v) for v in spec.normalize(x)])


def test_metadata_describes_the_shipped_file(bundled_model: Path, spec: InputSpec, int8: LoadedModel) -> None:
    meta = json.loads(bundled_model.with_suffix(".json").read_text())
    content = bundled_model.read_bytes()
    assert meta["sha256"] == hashlib.sha256(content).hexdigest() == int8.sha256
    assert meta["sizeBytes"] == len(content) < 16 * 1024  # a few KB
    assert meta["version"] == "1"
    assert [f.name for f in spec.features] == [f.name for f in MOTOR_FEATURES]
    assert [f.path for f in spec.features] == [f.path for f in MOTOR_FEATURES]
    assert (int8.input.dtype, int8.input.shape) == ("int8", (1, 4))
    assert (int8.output.dtype, int8.output.shape) == ("int8", (1, 1))
    assert int8.input.scale == pytest.approx(meta["input"]["scale"])
    assert meta["metrics"]["int8"][f"at_{THRESHOLD}"]["precision"] > 0.95
    assert meta["metrics"]["int8"][f"at_{THRESHOLD}"]["recall"] > 0.95


def test_healthy_scores_low_every_fault_scores_high(
    fresh: tuple[list[ds.Episode], ds.Dataset], int8: LoadedModel, spec: InputSpec
) -> None:
    episodes, data = fresh
    s = scores(int8, spec, data.x)
    healthy = data.kind == "healthy"
    assert s[healthy].max() < 0.5, "a healthy window scored high"
    for kind in ("bearing_wear", "overheating", "stall"):
        # Once the fault has had 10 s (one thermal time constant) to develop, every window alerts.
        developed = (data.kind == kind) & (data.y == 1) & (data.time_s >= 5.0 + 10.0)
        assert developed.sum() > 50
        assert np.mean(s[developed] > THRESHOLD) == 1.0, kind
        onset = ds.detection_delays(data, episodes, s, THRESHOLD)[kind]
        assert onset["alerted"] == onset["episodes"]
        assert onset["maxDelaySecs"] is not None
        assert onset["maxDelaySecs"] <= 10.0, kind


def test_int8_agrees_with_float(
    fresh: tuple[list[ds.Episode], ds.Dataset], int8: LoadedModel, floating: LoadedModel, spec: InputSpec
) -> None:
    _, data = fresh
    q, f = scores(int8, spec, data.x), scores(floating, spec, data.x)
    assert np.max(np.abs(q - f)) < 0.2
    assert np.mean(np.abs(q - f)) < 0.02
    assert np.mean((q > THRESHOLD) == (f > THRESHOLD)) > 0.98


def test_quantisation_uses_the_models_parameters(int8: LoadedModel) -> None:
    scale, zero = int8.input.scale, int8.input.zero_point
    q = int8.quantize(np.array([0.0, 1.0, -1.0, 1e6], dtype=np.float32))
    assert q.dtype == np.int8
    assert q.shape == (1, 4)
    assert q[0, 0] == zero
    assert q[0, 1] == round(1.0 / scale + zero)
    assert q[0, 3] == 127  # saturates instead of wrapping
