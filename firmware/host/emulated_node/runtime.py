"""Level-1 inference on the host: the real TFLM interpreter from the ``tflite-micro`` package.

The board runs the same models with TFLM through ``espressif/esp-tflite-micro``. TFLM allocates
every tensor from one arena; :func:`minimal_arena` finds the smallest arena a model loads and runs
in (the figure the board's RAM budget must hold), by bisection.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from tflite_micro.python.tflite_micro import runtime as tflm

from emulated_node.core import LoadedModel

#: The arena the node gives TFLM (the ESP32-C3 board layer reserves the same).
ARENA_BYTES = 16 * 1024


class ModelLoadError(ValueError):
    """Not a model TFLM can load into the node's arena."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """TFLM prints allocation failures to fd 2 from C++; a bisection provokes them on purpose."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interpreter(model: bytes, arena: int) -> Any:
    interpreter = tflm.Interpreter.from_bytes(model, arena_size=arena)
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(tuple(details["shape"]), dtype=details["dtype"]), 0)
    interpreter.invoke()
    return interpreter


def minimal_arena(model: bytes, *, high: int = ARENA_BYTES, step: int = 16) -> int:
    """The smallest arena (to ``step`` bytes) in which TFLM loads and runs ``model``."""
    low = 0
    with _quiet_stderr():
        while high - low > step:
            mid = (low + high) // 2
            try:
                _interpreter(model, mid)
            except Exception:  # TFLM reports a too-small arena as RuntimeError, bad bytes otherwise
                low = mid
            else:
                high = mid
    return high


class TflmRuntime:
    """One TFLM interpreter with the node's arena; ``load`` replaces it."""

    def __init__(self, arena_bytes: int = ARENA_BYTES) -> None:
        self.arena_bytes = arena_bytes
        self._interpreter: Any = None

    def load(self, model: bytes) -> LoadedModel:
        try:
            with _quiet_stderr():
                interpreter = _interpreter(model, self.arena_bytes)
        except Exception as exc:  # TFLM raises RuntimeError, its flatbuffer reader struct.error, ...
            raise ModelLoadError(f"TFLM cannot load the model into a {self.arena_bytes}-byte arena: {exc}") from None
        inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
        if np.dtype(inp["dtype"]) != np.int8 or np.dtype(out["dtype"]) != np.int8:
            raise ModelLoadError(f"model input/output are {inp['dtype']}/{out['dtype']}, the node runs int8 models")
        in_q, out_q = inp["quantization_parameters"], out["quantization_parameters"]
        self._interpreter = interpreter
        return LoadedModel(
            inputs=int(np.prod(inp["shape"])),
            outputs=int(np.prod(out["shape"])),
            input_scale=float(in_q["scales"][0]),
            input_zero_point=int(in_q["zero_points"][0]),
            output_scale=float(out_q["scales"][0]),
            output_zero_point=int(out_q["zero_points"][0]),
            arena_bytes=minimal_arena(model, high=self.arena_bytes),
        )

    def invoke(self, values: npt.NDArray[np.int8]) -> int:
        self._interpreter.set_input(values.reshape(1, -1).astype(np.int8), 0)
        self._interpreter.invoke()
        return int(np.asarray(self._interpreter.get_output(0)).reshape(-1)[0])
