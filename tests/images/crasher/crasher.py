"""Exit with EXIT_CODE (default 3) after CRASH_AFTER seconds (default 1); SIGTERM exits 0 at once."""

import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
after = float(os.environ.get("CRASH_AFTER") or 1)
code = int(os.environ.get("EXIT_CODE") or 3)
print(f"crasher: started, crashing with exit code {code} in {after} s", flush=True)
time.sleep(after)
print(f"crasher: crashing with exit code {code}", file=sys.stderr, flush=True)
sys.exit(code)
