"""Exit 0 after EXIT_AFTER seconds (default 1); SIGTERM exits 0 at once."""

import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
after = float(os.environ.get("EXIT_AFTER") or 1)
print(f"exiter: started, exiting 0 in {after} s", flush=True)
time.sleep(after)
print("exiter: done", flush=True)
sys.exit(0)
