"""Trust: operator keys, signed deployment content and the device's admission check.

Pure logic over ``cryptography`` (Ed25519) and RFC 8785 canonical JSON; files are written
atomically through ``outpost.files``. Used by the agent's composition root (admission of a new
deployment), by ``outpost keys``/``outpost agent trust`` and by offline bundles.
"""
