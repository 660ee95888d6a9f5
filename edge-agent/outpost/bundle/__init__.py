"""Offline bundles: deployments carried to a disconnected site, and its data carried home.

``outpost bundle create|apply`` (down: signed content, images, twins, model files) and
``export-upstream|import-upstream|receipt`` (up: the hub's queued ``$upstream`` messages).
Pure planning and verification here; Docker, SQLite and Kafka only through ``adapters``.
"""
