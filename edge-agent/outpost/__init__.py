"""Outpost: a self-hosted, offline-first edge module runtime in the style of Azure IoT Edge.

Sub-packages, top layer first (enforced by import-linter, see ``pyproject.toml``):
``cli`` > ``agent`` | ``hub`` | ``fleet`` | ``sdk`` > ``manifest`` > ``lang`` > ``errors``.
"""

__version__ = "0.1.0"
