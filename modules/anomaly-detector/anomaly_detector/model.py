"""A ``.tflite`` model loaded into a LiteRT interpreter, validated, answering one score per vector.

LiteRT (``ai-edge-litert``) is the runtime; ``tflite-runtime`` is used instead where only that is
installed (e.g. a self-built armv7 wheel). The Coral Edge TPU delegate (``libedgetpu.so.1``) is tried
for every new interpreter unless ``OUTPOST_EDGETPU=off``; when it cannot be loaded the model runs on
the CPU and one clear log line says so. (A model runs on the Edge TPU only when compiled for it by
``edgetpu_compiler``; otherwise the delegate claims no op and LiteRT runs everything on the CPU.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from anomaly_detector.inputs import InputSpec

try:
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    RUNTIME = "ai-edge-litert"
except ImportError:  # pragma: no cover - only on images that ship tflite-runtime instead
    from tflite_runtime.interpreter import Interpreter, load_delegate

    RUNTIME = "tflite-runtime"

log = logging.getLogger("anomaly-detector")

EDGETPU_LIBRARY = "libedgetpu.so.1"
SUPPORTED_DTYPES = (np.float32, np.int8, np.uint8)
_edgetpu_logged = threading.Event()


class ModelError(Exception):
    """A model that cannot serve: unreadable, not a TFLite flatbuffer, wrong shape, failing its self-test."""


def _load_edgetpu(mode: str) -> list[Any]:
    """``[delegate]`` when the Edge TPU delegate loads, else ``[]`` (logged once per process)."""
    if mode == "off":
        return []
    try:
        delegate = load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError) as exc:
        if not _edgetpu_logged.is_set():
            _edgetpu_logged.set()
            log.info("Edge TPU delegate %s not available (%s); running inference on the CPU", EDGETPU_LIBRARY, exc)
        return []
    if not _edgetpu_logged.is_set():
        _edgetpu_logged.set()
        log.info("Edge TPU delegate %s loaded; models compiled for the Edge TPU run on it", EDGETPU_LIBRARY)
    return [delegate]


def edgetpu_mode() -> str:
    mode = os.environ.get("OUTPOST_EDGETPU", "auto").strip().lower()
    return mode if mode in ("auto", "off") else "auto"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zeroPoint": self.zero_point}


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class LoadedModel:
    """One interpreter for one model. Not thread-safe: the owner (``ModelManager``) serialises calls."""

    def __init__(
        self,
        content: bytes,
        *,
        version: str,
        spec: InputSpec,
        source: str = "",
        edgetpu: str = "auto",
        num_threads: int = 1,
    ) -> None:
        self.version = version
        self.spec = spec
        self.source = source
        self.sha256 = hashlib.sha256(content).hexdigest()
        self.size_bytes = len(content)
        self.loaded_at = time.time()
        delegates = _load_edgetpu(edgetpu)
        self.delegate = "edgetpu" if delegates else "cpu"
        what = f"model {version!r}"
        try:
            self._interpreter = Interpreter(
                model_content=content, experimental_delegates=delegates or None, num_threads=num_threads
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{what}: not a loadable TFLite model ({exc})") from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{what}: expected 1 input and 1 output tensor, got {len(inputs)} and {len(outputs)}")
        self.input = _tensor_info(inputs[0])
        self.output = _tensor_info(outputs[0])
        self._input_index = int(inputs[0]["index"])
        self._output_index = int(outputs[0]["index"])
        self._input_dtype = np.dtype(inputs[0]["dtype"])
        want_in = (1, spec.size)
        if self.input.shape != want_in:
            raise ModelError(
                f"{what}: input shape {list(self.input.shape)} does not match the {spec.size} features "
                f"{spec.names} (expected {list(want_in)})"
            )
        if self.output.shape != (1, 1):
            raise ModelError(f"{what}: output shape {list(self.output.shape)} is not [1, 1] (one score)")
        for name, info in (("input", self.input), ("output", self.output)):
            if np.dtype(info.dtype) not in [np.dtype(d) for d in SUPPORTED_DTYPES]:
                raise ModelError(f"{what}: {name} type {info.dtype} is not float32, int8 or uint8")
            if info.dtype != "float32" and not info.quantized:
                raise ModelError(f"{what}: {name} is {info.dtype} without quantisation parameters")
        self.self_test()

    def quantize(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """The input tensor for ``vector``: quantised with the model's scale/zero point when it has them."""
        x = np.asarray(vector, dtype=np.float32).reshape(self.input.shape)
        if not self.input.quantized:
            return x.astype(np.float32)
        info = np.iinfo(self._input_dtype)
        q = np.round(x / self.input.scale + self.input.zero_point)
        return np.clip(q, info.min, info.max).astype(self._input_dtype)

    def predict(self, vector: npt.NDArray[np.float32]) -> float:
        """The score in [0, 1] for one normalised feature vector."""
        self._interpreter.set_tensor(self._input_index, self.quantize(vector))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output_index)
        value = float(raw.reshape(-1)[0])
        if self.output.quantized:
            value = (value - self.output.zero_point) * self.output.scale
        return value

    def self_test(self) -> None:
        """A test inference on a few vectors: every score must be a finite number in [0, 1]."""
        probes = [np.zeros(self.spec.size, dtype=np.float32), np.full(self.spec.size, 3.0, dtype=np.float32)]
        for probe in probes:
            try:
                score = self.predict(probe)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"model {self.version!r}: test inference failed ({exc})") from None
            if not np.isfinite(score) or not -1e-6 <= score <= 1 + 1e-6:
                raise ModelError(f"model {self.version!r}: test inference gave {score}, not a score in [0, 1]")

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "sizeBytes": self.size_bytes,
            "delegate": self.delegate,
            "runtime": RUNTIME,
            "source": self.source,
            "loadedAt": round(self.loaded_at, 3),
            "input": self.input.to_json(),
            "output": self.output.to_json(),
            "features": self.spec.names,
        }
