"""Health probe: ``python3 -m anomaly_detector.health`` exits 0 when the heartbeat file is fresh.

The running module touches the heartbeat file every few seconds while it has a model serving and its
main loop is alive (``main.py``). Environment (the same for the module and the probe):
``OUTPOST_HEARTBEAT_FILE`` (default: ``<tmp>/outpost-<device>-<module>.heartbeat``) and
``OUTPOST_HEARTBEAT_MAX_AGE`` seconds (default 30).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DEFAULT_MAX_AGE_SECS = 30.0
HEARTBEAT_EVERY_SECS = 5.0


def heartbeat_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get("OUTPOST_HEARTBEAT_FILE")
    if explicit:
        return Path(explicit)
    device = env.get("OUTPOST_DEVICE_ID") or env.get("IOTEDGE_DEVICEID") or "device"
    module = env.get("IOTEDGE_MODULEID") or "anomaly-detector"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{device}-{module}")
    return Path(tempfile.gettempdir()) / f"outpost-{safe}.heartbeat"


def beat(path: Path, now: float | None = None) -> None:
    """Touch the heartbeat file (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if now is not None:
        os.utime(path, (now, now))


def check(path: Path, max_age_secs: float = DEFAULT_MAX_AGE_SECS, now: float | None = None) -> tuple[bool, str]:
    """(healthy, why)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False, f"no heartbeat file {path}"
    age = (time.time() if now is None else now) - mtime
    if age > max_age_secs:
        return False, f"heartbeat {path} is {age:.1f} s old (> {max_age_secs:g} s)"
    return True, f"heartbeat {age:.1f} s old"


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        max_age = float(env.get("OUTPOST_HEARTBEAT_MAX_AGE", DEFAULT_MAX_AGE_SECS))
    except ValueError:
        max_age = DEFAULT_MAX_AGE_SECS
    ok, why = check(heartbeat_path(env), max_age)
    print(("healthy: " if ok else "unhealthy: ") + why, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
