"""Create /tmp/healthy, remove it after UNHEALTHY_AFTER seconds, then run until SIGTERM (exit 0)."""

import os
import pathlib
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
marker = pathlib.Path("/tmp/healthy")
marker.touch()
after = float(os.environ.get("UNHEALTHY_AFTER") or 3)
print(f"flaky-health: healthy, turning unhealthy in {after} s", flush=True)
time.sleep(after)
marker.unlink()
print("flaky-health: now unhealthy", flush=True)
while True:
    signal.pause()
