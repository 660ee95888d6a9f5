"""``python3 -m motor_sensor`` (the manifest's process command; the image's CMD)."""

import sys

from motor_sensor.main import main

sys.exit(main())
