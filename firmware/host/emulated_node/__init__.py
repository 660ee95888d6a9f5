"""The emulated sensor node: the firmware's compiled C++ core (``libnode_host.so``) with a host board
layer — a synthetic motor (or a recorded file) as the sensors, files as flash, the real TFLM
interpreter from the ``tflite-micro`` package for level-1 inference, and paho-mqtt as the leaf
device's MQTT client against an Outpost hub. ``python -m emulated_node --help`` runs one.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
