"""What the agent, the hub and the module SDK must agree on: MQTT topics, the message and its
property encoding, and per-module credentials. See ``docs/hub.md``.
"""
