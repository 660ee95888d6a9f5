"""Which MQTT link Outpost connects with: the one place that names the paho adapter.

The SDK and the hub take a ``LinkFactory`` (``outpost.wire.link``) and default to ``paho``;
tests pass ``outpost.wire.loopback`` links instead.
"""

from __future__ import annotations

from collections.abc import Callable

from outpost.wire.link import Event, Link, LinkSettings

__all__ = ["paho"]


def paho(settings: LinkSettings, on_event: Callable[[Event], None]) -> Link:
    """A paho-mqtt link (``wire.adapters.paho_link.PahoLink``)."""
    from outpost.wire.adapters.paho_link import PahoLink

    return PahoLink(settings, on_event)
