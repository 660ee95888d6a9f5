"""anomaly-detector: level-2 LiteRT inference on FFT features, alerts above a threshold, model hot-swap.

Importing the package does not import LiteRT; ``anomaly_detector.model`` does.
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
BUNDLED_MODEL = MODELS_DIR / "motor-v1.tflite"

__all__ = ["BUNDLED_MODEL", "MODELS_DIR"]
