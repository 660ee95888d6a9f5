"""``outpost build``: multi-arch module images from iotedgedev's module.json, pushed, digest-pinned.

Planning is pure (:mod:`modules`, :mod:`template`, :mod:`requirements`, :mod:`plan`, :mod:`index`,
:mod:`deployment`); :mod:`runner` executes a plan through the Protocols in :mod:`ports`, which the
adapters implement (BuildKit via Debian's docker client, the registry's HTTP API, pip).
"""
