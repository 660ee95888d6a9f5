"""A module that misbehaves on request, for agent tests (runs as a process or in a container).

Environment:
  BEHAVE_NAME            name written to the mark file and the log (default: module id)
  BEHAVE_MARK            file to append "<name> <pid> <time>" to at every start
  BEHAVE_EXIT_AFTER      seconds until the program exits by itself (default: never)
  BEHAVE_EXIT_CODE       exit code then (default 0)
  BEHAVE_HEALTH_FILE     file created at start (a health probe can test for it)...
  BEHAVE_UNHEALTHY_AFTER ...and removed after this many seconds
SIGTERM ends it at once with code 0, as a well-behaved module should.
"""

import os
import signal
import sys
import time

name = os.environ.get("BEHAVE_NAME") or os.environ.get("IOTEDGE_MODULEID", "behave")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
mark = os.environ.get("BEHAVE_MARK")
if mark:
    with open(mark, "a") as handle:
        handle.write(f"{name} {os.getpid()} {time.time():.6f}\n")
health = os.environ.get("BEHAVE_HEALTH_FILE")
if health:
    open(health, "w").close()
print(f"{name} started", flush=True)
began = time.monotonic()
exit_after = float(os.environ.get("BEHAVE_EXIT_AFTER", "inf"))
unhealthy_after = float(os.environ.get("BEHAVE_UNHEALTHY_AFTER", "inf"))
while True:
    elapsed = time.monotonic() - began
    if elapsed >= exit_after:
        print(f"{name} exiting with {os.environ.get('BEHAVE_EXIT_CODE', '0')}", flush=True)
        sys.exit(int(os.environ.get("BEHAVE_EXIT_CODE", "0")))
    if health and elapsed >= unhealthy_after and os.path.exists(health):
        os.remove(health)
    time.sleep(0.05)
