"""``python3 -m fft_filter`` (the manifest's process command; the image's CMD)."""

import sys

from fft_filter.main import main

sys.exit(main())
