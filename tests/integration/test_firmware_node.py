"""The emulated node's pieces without a hub: TFLM as the node runs it, and the compiled core's
features and scores against the gateway's Python modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from emulated_node.core import NodeCore
from emulated_node.node import FACTORY_MODEL
from emulated_node.runtime import ARENA_BYTES, ModelLoadError, TflmRuntime, minimal_arena
from emulated_node.sensor import SyntheticMotor
from fft_filter.features import FilterSettings, extract

from integration.firmware_harness import FIRMWARE, ROOT, HostBuild

#: What the board's op resolver registers (main/tflm_inference.cpp): a model needing more is refused.
BOARD_OPS = {"FULLY_CONNECTED", "LOGISTIC"}
#: The ESP32-C3 board layer reserves this much for TFLM's arena (main/board_config.h).
BOARD_ARENA = 16 * 1024


def _litert(model: bytes) -> Interpreter:
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    return interpreter


def test_the_models_ops_are_the_boards_and_fit_its_arena() -> None:
    model = FACTORY_MODEL.read_bytes()
    ops = {op["op_name"] for op in _litert(model)._get_ops_details()} - {"DELEGATE"}
    assert ops <= BOARD_OPS, f"the board's TFLM op resolver lacks {ops - BOARD_OPS}"
    board = (FIRMWARE / "main" / "tflm_inference.cpp").read_text()
    for op in ops:  # the board's resolver really registers each op the model uses
        name = "".join(part.capitalize() for part in op.split("_"))
        assert f"Add{name}()" in board, f"main/tflm_inference.cpp does not register {op}"
    arena = minimal_arena(model)
    assert 0 < arena <= BOARD_ARENA == ARENA_BYTES
    loaded = TflmRuntime().load(model)
    assert (loaded.inputs, loaded.outputs) == (4, 1)
    meta = json.loads(FACTORY_MODEL.with_suffix(".json").read_text())
    assert loaded.input_scale == pytest.approx(meta["input"]["scale"])
    assert loaded.input_zero_point == meta["input"]["zeroPoint"]
    assert loaded.output_scale == pytest.approx(meta["output"]["scale"])
    assert loaded.output_zero_point == meta["output"]["zeroPoint"]
    print(f"TFLM arena for {FACTORY_MODEL.name}: {arena} bytes (board reserves {BOARD_ARENA})")


def test_tflm_matches_litert_within_one_quantisation_step(firmware_host: HostBuild, tmp_path: Path) -> None:
    model = FACTORY_MODEL.read_bytes()
    tflm = TflmRuntime()
    tflm.load(model)
    litert = _litert(model)
    inp, out = litert.get_input_details()[0], litert.get_output_details()[0]
    # The inputs the node computes for real windows (the shared vectors' motor states and a fault run),
    # plus a sweep over the whole int8 input space.
    node = NodeCore(firmware_host.library, tmp_path, "parity", tflm)
    assert node.install_factory(model, "1")
    vectors: list[tuple[int, ...]] = []
    motor = SyntheticMotor(seed=3)
    for fault in (None, "bearing_wear", "stall", "overheating"):
        motor.inject(fault)
        for _ in range(6):
            vectors.append(node.process(motor.next_window(), 0.0).quantized)
    cases = json.loads((FIRMWARE / "test-vectors" / "features.json").read_text())["cases"]
    for case in cases:
        window = {c: np.asarray(v) for c, v in case["samples"].items()}
        vectors.append(node.process(window, 0.0).quantized)
    rng = np.random.default_rng(5)
    vectors += [tuple(int(v) for v in row) for row in rng.integers(-128, 128, size=(300, 4))]
    worst = 0
    for vector in vectors:
        x = np.asarray(vector, dtype=np.int8).reshape(1, 4)
        litert.set_tensor(inp["index"], x)
        litert.invoke()
        expected = int(litert.get_tensor(out["index"]).reshape(-1)[0])
        worst = max(worst, abs(tflm.invoke(x.reshape(-1)) - expected))
    assert worst <= 1, f"TFLM and LiteRT differ by {worst} quantisation steps"
    assert len(vectors) > 300
    node.close()


def test_node_features_and_score_agree_with_the_gateway(firmware_host: HostBuild, tmp_path: Path) -> None:
    """The node's telemetry is a features message: the same numbers fft-filter computes."""
    node = NodeCore(firmware_host.library, tmp_path, "agree", TflmRuntime())
    assert node.install_factory(FACTORY_MODEL.read_bytes(), "1")
    node.activation_start("", "", "provisioned", 0)
    motor = SyntheticMotor(seed=9)
    motor.inject("bearing_wear")
    window = motor.next_window()
    result = node.process(window, 1.5)
    item = node.peek()
    assert item is not None
    topic, payload = item
    assert topic.startswith("devices/agree/messages/events/")
    mine = json.loads(payload)
    theirs = extract({**{c: v.astype(np.float32).tolist() for c, v in window.items()}, "sampleRateHz": 8000},
                     FilterSettings())  # fmt: skip
    for channel in ("current", "temperature", "vibration", "sound"):
        assert mine[channel] == pytest.approx(theirs[channel], rel=2e-3)
        for band, value in theirs["fft_data"][channel]["bands"].items():
            total = theirs["fft_data"][channel]["std"] ** 2
            assert mine["fft_data"][channel]["bands"][band] == pytest.approx(value, rel=2e-3, abs=2e-3 * total)
    # The gateway's own input pipeline on the node's features gives the node's quantised inputs.
    from anomaly_detector.inputs import InputSpec

    meta = json.loads(FACTORY_MODEL.with_suffix(".json").read_text())
    spec = InputSpec.from_json(meta)
    # ... and the gateway's detector reads the node's own telemetry as a features message (level 2).
    assert spec.vector(mine) == pytest.approx(spec.vector(theirs), abs=1e-2)
    gateway = np.round(spec.vector(theirs) / np.float32(meta["input"]["scale"]) + meta["input"]["zeroPoint"])
    assert np.max(np.abs(np.clip(gateway, -128, 127) - np.asarray(result.quantized))) <= 1
    assert mine["score"] == pytest.approx(result.score)
    node.close()


def test_a_file_that_is_not_a_model_is_refused_by_name() -> None:
    with pytest.raises(ModelLoadError, match="TFLM cannot load the model"):
        TflmRuntime().load(b"TFL3 but not really a flatbuffer" * 4)
    wrong = ROOT / "tests" / "unit" / "modules" / "data" / "wrong-shape.tflite"
    loaded = TflmRuntime().load(wrong.read_bytes())
    assert (loaded.inputs, loaded.outputs) != (4, 1)  # loads; the core refuses it (model_fits)
