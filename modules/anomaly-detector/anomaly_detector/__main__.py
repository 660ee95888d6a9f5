"""``python3 -m anomaly_detector`` (the manifest's process command; the image's CMD)."""

import sys

from anomaly_detector.main import main

sys.exit(main())
