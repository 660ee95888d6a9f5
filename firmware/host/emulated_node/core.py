"""The firmware core through its C ABI (``firmware/host/src/capi.cpp``), loaded with ctypes.

Everything the node decides happens in the C++ core; this module only moves bytes across. The
inference seam calls back into Python (:class:`Runtime`), which runs TFLM.
"""

from __future__ import annotations

import ctypes
import json
import math
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

WINDOW = 1024
CHANNELS = ("current", "temperature", "vibration", "sound")
INPUTS = 4


class CoreError(RuntimeError):
    """The core library is missing or refused to start."""


class ModelIo(ctypes.Structure):
    _fields_ = [
        ("inputs", ctypes.c_int32),
        ("outputs", ctypes.c_int32),
        ("input_scale", ctypes.c_float),
        ("input_zero_point", ctypes.c_int32),
        ("output_scale", ctypes.c_float),
        ("output_zero_point", ctypes.c_int32),
        ("arena_used", ctypes.c_uint64),
    ]


class _Window(ctypes.Structure):
    _fields_ = [
        ("score", ctypes.c_float),
        ("raw_score", ctypes.c_int32),
        ("fault", ctypes.c_int32),
        ("valve_open", ctypes.c_int32),
        ("valve_changed", ctypes.c_int32),
        ("duty", ctypes.c_uint32),
        ("queued", ctypes.c_int32),
        ("inputs", ctypes.c_float * INPUTS),
        ("quantized", ctypes.c_int8 * INPUTS),
    ]


LOAD_FN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t, ctypes.POINTER(ModelIo)
)
INVOKE_FN = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int8)
)


class ActivationState(IntEnum):
    UNPROVISIONED = 0
    REQUESTING = 1
    BACKOFF = 2
    ACTIVATED = 3
    REFUSED = 4
    DEACTIVATED = 5


@dataclass(frozen=True)
class LoadedModel:
    inputs: int
    outputs: int
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    arena_bytes: int


class Runtime(Protocol):
    """The inference seam on the host: TFLM (``runtime.TflmRuntime``)."""

    def load(self, model: bytes) -> LoadedModel: ...

    def invoke(self, values: npt.NDArray[np.int8]) -> int: ...


@dataclass(frozen=True)
class WindowResult:
    score: float | None
    raw_score: int
    fault: bool
    valve_open: bool
    valve_changed: bool
    duty: int
    queued: bool
    inputs: tuple[float, ...]
    quantized: tuple[int, ...]


def _setup(lib: ctypes.CDLL) -> None:
    c = ctypes
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "fw_create": (c.c_int, [c.c_char_p, c.c_char_p, c.c_uint32, c.c_float, LOAD_FN, INVOKE_FN, c.c_void_p]),
        "fw_destroy": (None, [c.c_int]),
        "fw_model_loaded": (c.c_int, [c.c_int]),
        "fw_install_factory": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t, c.c_char_p]),
        "fw_process": (c.c_int, [c.c_int, c.POINTER(c.c_float), c.c_int64, c.POINTER(_Window)]),
        "fw_queue_peek": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t, c.c_char_p, c.c_size_t]),
        "fw_queue_pop": (None, [c.c_int]),
        "fw_queue_depth": (c.c_int, [c.c_int]),
        "fw_queue_dropped": (c.c_uint32, [c.c_int]),
        "fw_desired": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t, c.c_char_p, c.c_size_t]),
        "fw_method": (c.c_int, [c.c_int, c.c_char_p, c.c_char_p, c.c_size_t, c.c_char_p, c.c_size_t]),
        "fw_reported": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t]),
        "fw_ota_next": (c.c_int, [c.c_int, c.POINTER(c.c_uint32), c.POINTER(c.c_uint32)]),
        "fw_ota_chunk": (c.c_int, [c.c_int, c.c_uint32, c.c_char_p, c.c_size_t]),
        "fw_ota_error": (None, [c.c_int, c.c_char_p]),
        "fw_ota_url": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t]),
        "fw_activation_start": (None, [c.c_int, c.c_char_p, c.c_char_p, c.c_char_p, c.c_int64]),
        "fw_activation_due": (c.c_int, [c.c_int, c.c_int64]),
        "fw_activation_body": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t]),
        "fw_activation_response": (c.c_int, [c.c_int, c.c_int, c.c_char_p, c.c_size_t, c.c_int64]),
        "fw_activation_transport_error": (None, [c.c_int, c.c_int64]),
        "fw_activation_credential_refused": (None, [c.c_int, c.c_int64]),
        "fw_activation_state": (c.c_int, [c.c_int]),
        "fw_activation_credential": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t]),
        "fw_activation_error": (c.c_int, [c.c_int, c.c_char_p, c.c_size_t]),
        "fw_servo_duty": (c.c_uint32, [c.c_float]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


class NodeCore:
    """One node of the core library. Not thread-safe: one owner thread calls it."""

    def __init__(
        self, library: Path, state_dir: Path, device_id: str, runtime: Runtime, *, boot: int = 0, rate_hz: float = 8000
    ) -> None:
        try:
            self._lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise CoreError(f"cannot load the firmware core {library}: {exc} (build: firmware/README.md)") from None
        _setup(self._lib)
        self.runtime = runtime
        self.load_error: str | None = None
        # The callbacks must outlive the node: keep references.
        self._load_cb = LOAD_FN(self._on_load)
        self._invoke_cb = INVOKE_FN(self._on_invoke)
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = self._lib.fw_create(
            str(state_dir).encode(), device_id.encode(), boot, rate_hz, self._load_cb, self._invoke_cb, None
        )
        if handle < 0:
            raise CoreError(f"the firmware core refused to start (device id {device_id!r}, state {state_dir})")
        self._h: int = handle
        self._buf = ctypes.create_string_buffer(8192)
        self._topic = ctypes.create_string_buffer(256)

    # -- inference seam (called from C) --
    def _on_load(self, _ctx: Any, data: Any, size: int, io: Any) -> int:
        try:
            model = ctypes.string_at(data, size)
            loaded = self.runtime.load(model)
        except Exception as exc:  # a callback must not raise into C: report failure instead
            self.load_error = f"{type(exc).__name__}: {exc}"
            return 0
        out = io.contents
        out.inputs, out.outputs = loaded.inputs, loaded.outputs
        out.input_scale, out.input_zero_point = loaded.input_scale, loaded.input_zero_point
        out.output_scale, out.output_zero_point = loaded.output_scale, loaded.output_zero_point
        out.arena_used = loaded.arena_bytes
        self.load_error = None
        return 1

    def _on_invoke(self, _ctx: Any, values: Any, out: Any) -> int:
        try:
            vector = np.ctypeslib.as_array(values, shape=(INPUTS,)).astype(np.int8)
            out[0] = self.runtime.invoke(vector)
        except Exception:  # a failed inference scores nothing (NaN) in the core
            return 0
        return 1

    # -- the node --
    def close(self) -> None:
        self._lib.fw_destroy(self._h)

    @property
    def model_loaded(self) -> bool:
        return bool(self._lib.fw_model_loaded(self._h))

    def install_factory(self, model: bytes, version: str) -> bool:
        return bool(self._lib.fw_install_factory(self._h, model, len(model), version.encode()))

    def process(self, window: dict[str, npt.NDArray[np.float64]], timestamp: float) -> WindowResult:
        frame = np.ascontiguousarray(np.stack([window[c][:WINDOW] for c in CHANNELS]).astype(np.float32))
        out = _Window()
        ptr = frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if not self._lib.fw_process(self._h, ptr, int(timestamp * 1000), ctypes.byref(out)):
            raise CoreError("the core refused the window (non-finite samples)")
        return WindowResult(
            score=None if math.isnan(out.score) else float(out.score),
            raw_score=out.raw_score,
            fault=bool(out.fault),
            valve_open=bool(out.valve_open),
            valve_changed=bool(out.valve_changed),
            duty=out.duty,
            queued=bool(out.queued),
            inputs=tuple(float(v) for v in out.inputs),
            quantized=tuple(int(v) for v in out.quantized),
        )

    def peek(self) -> tuple[str, bytes] | None:
        n = self._lib.fw_queue_peek(self._h, self._topic, len(self._topic), self._buf, len(self._buf))
        if n < 0:
            return None
        return self._topic.value.decode(), self._buf.raw[:n]

    def pop(self) -> None:
        self._lib.fw_queue_pop(self._h)

    @property
    def queue_depth(self) -> int:
        return int(self._lib.fw_queue_depth(self._h))

    @property
    def queue_dropped(self) -> int:
        return int(self._lib.fw_queue_dropped(self._h))

    def desired(self, document: bytes) -> str | None:
        """Apply desired properties; the refusal's reason, or None."""
        ok = self._lib.fw_desired(self._h, document, len(document), self._buf, len(self._buf))
        return None if ok else self._buf.value.decode(errors="replace")

    def method(self, name: str, payload: bytes) -> tuple[int, bytes]:
        status = self._lib.fw_method(self._h, name.encode(), payload, len(payload), self._buf, len(self._buf))
        return int(status), self._buf.value

    def reported(self) -> dict[str, Any]:
        if not self._lib.fw_reported(self._h, self._buf, len(self._buf)):
            raise CoreError("reported properties do not fit")
        doc: dict[str, Any] = json.loads(self._buf.value)
        return doc

    def ota_next(self) -> tuple[int, int] | None:
        offset, length = ctypes.c_uint32(), ctypes.c_uint32()
        if not self._lib.fw_ota_next(self._h, ctypes.byref(offset), ctypes.byref(length)):
            return None
        return offset.value, length.value

    def ota_chunk(self, offset: int, data: bytes) -> bool:
        return bool(self._lib.fw_ota_chunk(self._h, offset, data, len(data)))

    def ota_url(self) -> str:
        self._lib.fw_ota_url(self._h, self._buf, len(self._buf))
        return self._buf.value.decode()

    def ota_error(self, why: str) -> None:
        self._lib.fw_ota_error(self._h, why.encode())

    def activation_start(self, endpoint: str, key: str, stored: str, now_ms: int) -> None:
        self._lib.fw_activation_start(self._h, endpoint.encode(), key.encode(), stored.encode(), now_ms)

    def activation_due(self, now_ms: int) -> bool:
        return bool(self._lib.fw_activation_due(self._h, now_ms))

    def activation_body(self) -> bytes:
        if not self._lib.fw_activation_body(self._h, self._buf, len(self._buf)):
            raise CoreError("activation request does not fit")
        return self._buf.value

    def activation_response(self, status: int, body: bytes, now_ms: int) -> ActivationState:
        return ActivationState(self._lib.fw_activation_response(self._h, status, body, len(body), now_ms))

    def activation_transport_error(self, now_ms: int) -> None:
        self._lib.fw_activation_transport_error(self._h, now_ms)

    def activation_credential_refused(self, now_ms: int) -> None:
        self._lib.fw_activation_credential_refused(self._h, now_ms)

    @property
    def activation_state(self) -> ActivationState:
        return ActivationState(self._lib.fw_activation_state(self._h))

    def activation_credential(self) -> tuple[str, bool]:
        """The credential, and whether it changed since the last call (then persist it)."""
        changed = self._lib.fw_activation_credential(self._h, self._buf, len(self._buf))
        return self._buf.value.decode(), bool(changed)

    def activation_error(self) -> str:
        self._lib.fw_activation_error(self._h, self._buf, len(self._buf))
        return self._buf.value.decode()

    def servo_duty(self, angle_deg: float) -> int:
        return int(self._lib.fw_servo_duty(angle_deg))
