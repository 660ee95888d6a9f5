"""``python3 -m alert_actuator`` (the manifest's process command; the image's CMD)."""

import sys

from alert_actuator.main import main

sys.exit(main())
