"""The edge hub: Mosquitto as the broker, plus a router that stores every message before it
acknowledges it and forwards from per-endpoint checkpoints. See ``docs/hub.md``.
"""
