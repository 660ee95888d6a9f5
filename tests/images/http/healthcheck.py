"""Container health check: GET /healthz on the server's own address."""

import os
import sys
import urllib.request

bind = os.environ.get("BIND") or "127.0.0.1"
host = "127.0.0.1" if bind in ("0.0.0.0", "") else bind
url = f"http://{host}:{int(os.environ.get('PORT') or 8080)}/healthz"
try:
    with urllib.request.urlopen(url, timeout=1) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
