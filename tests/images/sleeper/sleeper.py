"""Run until SIGTERM or SIGINT, then exit 0 at once (as PID 1 the default action would be ignored)."""

import os
import pathlib
import signal
import sys


def _stop(signum: int, _frame: object) -> None:
    print(f"sleeper: signal {signum}, exiting 0", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)
pathlib.Path("/tmp/ready").touch()
print(f"sleeper: ready (image version {os.environ.get('OUTPOST_TEST_IMAGE_VERSION')})", flush=True)
while True:
    signal.pause()
