"""A deterministic simulator of an induction motor's sensors (pure numpy, no I/O).

Each call to :meth:`MotorSimulator.next_window` advances simulated time by one window period
(``1 / windowsPerSecond``) and returns ``windowSize`` samples per channel at ``sampleRateHz``:

- ``current`` (A): one phase current. Fundamental at the supply frequency, 3rd and 5th harmonics,
  rotor-eccentricity sidebands at ``f_supply +- f_rot``; its RMS follows the load through a
  magnetising + torque-current model (``I/I_rated = sqrt(m^2 + (1 - m^2) load^2)``).
- ``temperature`` (degC): winding temperature from a first-order thermal model: losses are a constant
  (iron, friction) part plus copper losses ``~ I^2``, ``T_eq = ambient + rise * (0.3 + 0.7 (I/I_rated)^2)
  * cooling_factor``, approached with time constant ``thermal_tau_s`` (scaled down for a demo:
  seconds, not the half hour of a real motor), plus sensor noise.
- ``vibration`` (g): unbalance at the rotation frequency ``f_rot`` (growing with speed squared),
  misalignment at ``2 f_rot`` and ``3 f_rot``, electromagnetic vibration at twice the supply frequency
  (growing with current squared), broadband noise.
- ``sound`` (Pa): magnetic hum at ``2 f_supply`` and ``4 f_supply``, fan blade-pass tone, air noise.

Faults (``Fault``), each with a severity in [0, 1], leave their signature in the raw waveforms:

- ``bearing_wear``: outer/inner race defect tones (BPFO, BPFI with ``+- f_rot`` sidebands, from the
  bearing geometry) in vibration and sound, a structural resonance (``resonance_hz``) amplitude
  modulated at BPFO (the high-frequency "envelope" signature), more broadband vibration, and small
  current sidebands at ``f_supply +- BPFO``.
- ``overheating``: blocked cooling plus overload: cooling factor ``1 + 4 s`` and load x ``1 + 0.35 s``
  (current up at once), so the temperature climbs with the thermal time constant.
- ``stall``: locked rotor: current jumps to ``locked_rotor_ratio`` x rated, the rotation frequency
  drops to ~0 (rotation tones, fan tone and bearing tones vanish), the shaft fan stops cooling, the
  magnetic hum and 2x-supply vibration grow with current squared.

Everything is deterministic for a given seed and fault schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

FAULT_TYPES: tuple[str, ...] = ("bearing_wear", "overheating", "stall")
CHANNELS: tuple[str, ...] = ("current", "temperature", "vibration", "sound")
UNITS: dict[str, str] = {"current": "A", "temperature": "degC", "vibration": "g", "sound": "Pa"}
#: Decimals kept per channel in a published message (keeps JSON small; far below the noise floor).
DECIMALS: dict[str, int] = {"current": 4, "temperature": 3, "vibration": 5, "sound": 5}


class SettingsError(ValueError):
    """A desired property has a bad value; the message names the property (``faults[1].type: ...``)."""


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry (defaults: a 6205 deep-groove ball bearing)."""

    balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def bpfo(self, rotation_hz: float) -> float:
        """Ball pass frequency, outer race."""
        return self.balls / 2 * rotation_hz * (1 - self._ratio())

    def bpfi(self, rotation_hz: float) -> float:
        """Ball pass frequency, inner race."""
        return self.balls / 2 * rotation_hz * (1 + self._ratio())


@dataclass(frozen=True)
class MotorParams:
    """Physical constants of the simulated motor (a 4-pole, 50 Hz, 10 A machine by default)."""

    poles: int = 4
    rated_current_a: float = 10.0
    rated_slip: float = 0.03
    magnetizing_fraction: float = 0.35
    locked_rotor_ratio: float = 6.0
    rated_rise_c: float = 25.0
    thermal_tau_s: float = 10.0
    max_temperature_c: float = 180.0
    fan_blades: int = 8
    resonance_hz: float = 2800.0
    bearing: BearingGeometry = field(default_factory=BearingGeometry)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault; times are seconds of simulated time after the schedule was applied."""

    type: str
    start_secs: float = 0.0
    duration_secs: float | None = None
    severity: float = 1.0
    ramp_secs: float = 0.0

    def level(self, t: float) -> float:
        """Severity in force ``t`` seconds after the schedule was applied (0 when inactive)."""
        if t < self.start_secs:
            return 0.0
        if self.duration_secs is not None and t >= self.start_secs + self.duration_secs:
            return 0.0
        if self.ramp_secs > 0:
            return self.severity * min(1.0, (t - self.start_secs) / self.ramp_secs)
        return self.severity


def _number(value: Any, where: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(f"{where}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{where}: {value} is outside [{low}, {high}]")
    return float(value)


def _integer(value: Any, where: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{where}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{where}: {value} is outside [{low}, {high}]")
    return value


def parse_fault(value: Any, where: str) -> Fault:
    """A fault from ``"stall"`` or ``{"type": "stall", "startSecs": 5, "durationSecs": 30, "severity": 1,
    "rampSecs": 0}``."""
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{where}: expected a fault name or an object, got {value!r}")
    known = {"type", "startSecs", "durationSecs", "severity", "rampSecs"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kind = value.get("type")
    if kind not in FAULT_TYPES:
        raise SettingsError(f"{where}.type: {kind!r} is not one of {', '.join(FAULT_TYPES)}")
    duration = value.get("durationSecs")
    return Fault(
        type=kind,
        start_secs=_number(value.get("startSecs", 0.0), f"{where}.startSecs", low=0.0, high=1e9),
        duration_secs=None if duration is None else _number(duration, f"{where}.durationSecs", low=0.0, high=1e9),
        severity=_number(value.get("severity", 1.0), f"{where}.severity", low=0.0, high=1.0),
        ramp_secs=_number(value.get("rampSecs", 0.0), f"{where}.rampSecs", low=0.0, high=1e9),
    )


def parse_faults(value: Any) -> tuple[Fault, ...]:
    """The ``faults`` desired property: a list of fault names or fault objects (``[]`` or null: none)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise SettingsError(f"faults: expected a list, got {value!r}")
    return tuple(parse_fault(item, f"faults[{i}]") for i, item in enumerate(value))


@dataclass(frozen=True)
class SensorSettings:
    """The module's desired properties (``sampleRateHz``, ``windowSize``, ``windowsPerSecond``, ``seed``,
    ``faults``, and the optional operating point ``load``, ``ambientC``, ``supplyHz``)."""

    sample_rate_hz: int = 8000
    window_size: int = 1024
    windows_per_second: float = 2.0
    seed: int = 7
    faults: tuple[Fault, ...] = ()
    load: float = 0.8
    ambient_c: float = 25.0
    supply_hz: float = 50.0

    @property
    def period_secs(self) -> float:
        return 1.0 / self.windows_per_second

    @classmethod
    def from_desired(cls, desired: Mapping[str, Any], base: SensorSettings | None = None) -> SensorSettings:
        """Settings from desired properties; keys not present keep ``base``'s value (or the default).
        Keys starting with ``$`` (``$version``) are ignored; any other unknown key is an error."""
        cur = base or cls()
        keys = {"sampleRateHz", "windowSize", "windowsPerSecond", "seed", "faults", "load", "ambientC", "supplyHz"}
        unknown = sorted(k for k in desired if k not in keys and not k.startswith("$"))
        if unknown:
            raise SettingsError(f"{unknown[0]}: unknown desired property (known: {', '.join(sorted(keys))})")
        d = desired
        sample_rate = _integer(d.get("sampleRateHz", cur.sample_rate_hz), "sampleRateHz", low=200, high=192_000)
        settings = cls(
            sample_rate_hz=sample_rate,
            window_size=_integer(d.get("windowSize", cur.window_size), "windowSize", low=16, high=65_536),
            windows_per_second=_number(
                d.get("windowsPerSecond", cur.windows_per_second), "windowsPerSecond", low=0.01, high=100.0
            ),
            seed=_integer(d.get("seed", cur.seed), "seed", low=0, high=2**63 - 1),
            faults=parse_faults(d["faults"]) if "faults" in d else cur.faults,
            load=_number(d.get("load", cur.load), "load", low=0.0, high=1.5),
            ambient_c=_number(d.get("ambientC", cur.ambient_c), "ambientC", low=-40.0, high=80.0),
            supply_hz=_number(d.get("supplyHz", cur.supply_hz), "supplyHz", low=10.0, high=400.0),
        )
        if sample_rate < 20 * settings.supply_hz:
            raise SettingsError(f"sampleRateHz: {sample_rate} Hz is too low for supplyHz {settings.supply_hz} (< 20x)")
        return settings


@dataclass(frozen=True)
class OperatingPoint:
    load: float
    current_ratio: float  # I_rms / I_rated
    rotation_hz: float
    cooling_factor: float


@dataclass(frozen=True)
class Window:
    """One window of samples per channel, with the ground truth that produced it."""

    sequence: int
    sim_time_s: float
    sample_rate_hz: int
    channels: dict[str, FloatArray]
    faults: dict[str, float]
    operating_point: OperatingPoint

    @property
    def fault_label(self) -> str | None:
        """``"stall"``, ``"bearing_wear+overheating"``..., or None when healthy."""
        active = [name for name in FAULT_TYPES if self.faults.get(name, 0.0) > 0]
        return "+".join(active) if active else None

    def to_message(self, device_id: str, timestamp: float) -> dict[str, Any]:
        """The ``raw`` output's JSON body. ``fault`` (the simulator's ground truth) is present only while
        a fault is active; a real sensor would not send it."""
        message: dict[str, Any] = {
            "deviceID": device_id,
            "sequence": self.sequence,
            "timestamp": round(timestamp, 3),
            "simTimeSecs": round(self.sim_time_s, 3),
            "sampleRateHz": self.sample_rate_hz,
            "windowSize": len(self.channels["current"]),
            "units": dict(UNITS),
        }
        for name in CHANNELS:
            message[name] = np.round(self.channels[name], DECIMALS[name]).tolist()
        label = self.fault_label
        if label is not None:
            message["fault"] = label
        return message


class MotorSimulator:
    """See the module docstring. Not thread-safe: one caller advances it."""

    def __init__(self, settings: SensorSettings, params: MotorParams | None = None) -> None:
        self.params = params or MotorParams()
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)
        # Fixed random phases per component, so the waveforms are continuous in simulated time.
        self._phases = self.rng.uniform(0, 2 * math.pi, size=32)
        self.time_s = 0.0
        self.sequence = 0
        self._fault_origin = 0.0
        self._faults = settings.faults
        healthy = self.operating_point({})
        self.temperature_c = self._equilibrium(healthy)

    # -- configuration -------------------------------------------------------------------------

    def reconfigure(self, settings: SensorSettings) -> None:
        """Apply new settings. A new fault schedule starts counting from now; a new seed restarts the
        random streams (the motor's state, temperature included, is kept)."""
        if settings.seed != self.settings.seed:
            self.rng = np.random.default_rng(settings.seed)
            self._phases = self.rng.uniform(0, 2 * math.pi, size=32)
        if settings.faults != self._faults:
            self.set_faults(settings.faults)
        self.settings = settings

    def set_faults(self, faults: Sequence[Fault]) -> None:
        self._faults = tuple(faults)
        self._fault_origin = self.time_s

    def fault_levels(self, time_s: float | None = None) -> dict[str, float]:
        t = (self.time_s if time_s is None else time_s) - self._fault_origin
        levels: dict[str, float] = {}
        for fault in self._faults:
            level = fault.level(t)
            if level > 0:
                levels[fault.type] = max(levels.get(fault.type, 0.0), level)
        return levels

    # -- physics -------------------------------------------------------------------------------

    @property
    def synchronous_hz(self) -> float:
        return self.settings.supply_hz / (self.params.poles / 2)

    @property
    def rated_rotation_hz(self) -> float:
        return self.synchronous_hz * (1 - self.params.rated_slip)

    def operating_point(self, levels: Mapping[str, float], jitter: float = 0.0) -> OperatingPoint:
        p = self.params
        overheat = levels.get("overheating", 0.0)
        stall = levels.get("stall", 0.0)
        load = max(0.0, self.settings.load * (1 + 0.35 * overheat) * (1 + jitter))
        m = p.magnetizing_fraction
        ratio = math.sqrt(m * m + (1 - m * m) * load * load)
        rotation = self.synchronous_hz * (1 - p.rated_slip * load)
        cooling = 1 + 4.0 * overheat
        if stall > 0:
            rotation *= 1 - stall
            ratio = ratio * (1 - stall) + p.locked_rotor_ratio * stall
            cooling *= 1 + 1.0 * stall  # the shaft-mounted fan stops
        return OperatingPoint(load=load, current_ratio=ratio, rotation_hz=rotation, cooling_factor=cooling)

    def _equilibrium(self, op: OperatingPoint) -> float:
        p = self.params
        losses = 0.3 + 0.7 * op.current_ratio**2  # iron + friction, copper
        return self.settings.ambient_c + p.rated_rise_c * losses * op.cooling_factor

    # -- sampling ------------------------------------------------------------------------------

    def next_window(self) -> Window:
        s, p, rng = self.settings, self.params, self.rng
        levels = self.fault_levels()
        op = self.operating_point(levels, jitter=float(rng.normal(0.0, 0.01)))
        period = s.period_secs
        # Thermal model: exact first-order step over one window period, clipped at the sensor's range.
        t_eq = self._equilibrium(op)
        self.temperature_c += (t_eq - self.temperature_c) * (1 - math.exp(-period / p.thermal_tau_s))
        self.temperature_c = min(self.temperature_c, p.max_temperature_c)

        n = s.window_size
        t = self.time_s + np.arange(n, dtype=np.float64) / s.sample_rate_hz
        ph = self._phases
        fs_hz = s.supply_hz
        fr = op.rotation_hz
        speed = fr / self.rated_rotation_hz  # 1 at rated speed, 0 when stalled
        wear = levels.get("bearing_wear", 0.0)
        bpfo = p.bearing.bpfo(fr)
        bpfi = p.bearing.bpfi(fr)
        resonance_hz = min(p.resonance_hz, 0.35 * s.sample_rate_hz)  # never aliased

        def tone(freq: float, amp: float, k: int) -> FloatArray:
            out: FloatArray = amp * np.sin(2 * math.pi * freq * t + ph[k])
            return out

        # Phase current.
        i_pk = op.current_ratio * p.rated_current_a * math.sqrt(2)
        current = (
            tone(fs_hz, i_pk, 0)
            + tone(3 * fs_hz, 0.03 * i_pk, 1)
            + tone(5 * fs_hz, 0.02 * i_pk, 2)
            + tone(fs_hz - fr, 0.005 * i_pk * speed, 3)
            + tone(fs_hz + fr, 0.005 * i_pk * speed, 4)
            + tone(fs_hz + bpfo, 0.004 * i_pk * wear * speed, 5)
            + tone(abs(fs_hz - bpfo), 0.004 * i_pk * wear * speed, 6)
            + rng.normal(0.0, 0.01 * p.rated_current_a, n)
        )

        temperature = self.temperature_c + rng.normal(0.0, 0.05, n)

        # Vibration (acceleration, g).
        em = op.current_ratio**2
        resonance_env = 0.5 * (1 + np.cos(2 * math.pi * bpfo * t + ph[7]))
        vibration = (
            tone(fr, 0.05 * speed**2, 8)
            + tone(2 * fr, 0.02 * speed**2, 9)
            + tone(3 * fr, 0.008 * speed**2, 10)
            + tone(2 * fs_hz, 0.01 * em, 11)
            + tone(bpfo, 0.25 * wear * speed, 12)
            + tone(bpfi, 0.12 * wear * speed, 13)
            + tone(bpfi - fr, 0.05 * wear * speed, 14)
            + tone(bpfi + fr, 0.05 * wear * speed, 15)
            + 0.3 * wear * speed * resonance_env * np.sin(2 * math.pi * resonance_hz * t + ph[16])
            + rng.normal(0.0, 0.005 + 0.02 * wear * speed, n)
        )

        # Sound pressure (Pa).
        sound = (
            tone(2 * fs_hz, 0.02 * em, 17)
            + tone(4 * fs_hz, 0.008 * em, 18)
            + tone(p.fan_blades * fr, 0.015 * speed**2, 19)
            + tone(bpfo, 0.02 * wear * speed, 20)
            + 0.08 * wear * speed * resonance_env * np.sin(2 * math.pi * resonance_hz * t + ph[21])
            + rng.normal(0.0, 0.01 * (0.3 + 0.7 * speed), n)
        )

        window = Window(
            sequence=self.sequence,
            sim_time_s=self.time_s,
            sample_rate_hz=s.sample_rate_hz,
            channels={"current": current, "temperature": temperature, "vibration": vibration, "sound": sound},
            faults=levels,
            operating_point=op,
        )
        self.sequence += 1
        self.time_s += period
        return window
