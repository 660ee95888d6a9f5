"""A read-only MQTT 5 subscriber for ``outpost watch``: a throwaway session that disturbs nobody.

The same ``PahoLink`` as the hub and the SDK, but where they keep persistent sessions and ack by
hand, a tap connects with clean start and session expiry 0 under a client id of its own, so
nothing is left on the broker when it goes, and paho acknowledges incoming QoS 1 messages
itself. Other subscribers (the hub's ingress, with its persistent session) get their own copies
regardless. ``on_message`` runs on paho's network thread: it must only enqueue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from outpost.wire.adapters.paho_link import PahoLink
from outpost.wire.link import Connected, Disconnected, Event, Incoming, LinkSettings, Subscribed

__all__ = ["MqttTap", "TapError"]

OnMessage = Callable[[str, bytes, tuple[tuple[str, str], ...]], None]
_BAD_CREDENTIALS = {0x86, 0x87}  # bad user name or password, not authorized


class TapError(Exception):
    """The tap could not connect or subscribe; ``unreachable`` when no broker answered at all."""

    def __init__(self, message: str, *, unreachable: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.refused = refused


class MqttTap:
    """Subscribe to ``topics`` (QoS 1, auto-ack) as ``username``; :meth:`start` returns once subscribed."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str,
        password: str,
        topics: Sequence[str],
        on_message: OnMessage,
    ) -> None:
        self.host, self.port, self.topics = host, port, list(topics)
        self._on_message = on_message
        self._ready = threading.Event()
        self._error: TapError | None = None
        self.connected = False
        self.disconnect_reason = ""
        settings = LinkSettings(
            host=host, port=port, client_id=client_id, username=username, password=password,
            session_expiry=0, clean_start=True, auto_ack=True, receive_maximum=None, max_inflight=20,
        )  # fmt: skip
        self._link = PahoLink(settings, self._event)

    def _event(self, event: Event) -> None:
        if isinstance(event, Incoming):
            self._on_message(event.topic, event.payload, event.user_properties)
        elif isinstance(event, Connected):
            if not event.ok:
                self._fail(
                    TapError(
                        f"the broker refused the connection: {event.reason}", refused=event.code in _BAD_CREDENTIALS
                    )
                )
                return
            self.connected = True
            self._link.subscribe(self.topics)  # again after every reconnect: clean session
        elif isinstance(event, Subscribed):
            refused = [t for t, code in zip(self.topics, event.codes, strict=False) if code >= 0x80]
            if refused:
                self._fail(TapError(f"the broker refused the subscription to {', '.join(refused)}", refused=True))
            else:
                self._ready.set()
        elif isinstance(event, Disconnected):
            self.connected = False
            self.disconnect_reason = event.reason

    def _fail(self, error: TapError) -> None:
        if self._error is None:
            self._error = error
        self._ready.set()

    def start(self, timeout: float = 5.0) -> None:
        """Connect, subscribe and wait for the SUBACK; raises :class:`TapError` (and cleans up) if not."""
        try:
            self._link.start(blocking=True)
        except OSError as exc:
            raise TapError(f"cannot reach {self.host}:{self.port}: {exc}", unreachable=True) from exc
        if not self._ready.wait(timeout):
            self.stop()
            raise TapError(f"no answer from {self.host}:{self.port} within {timeout:g} s", unreachable=True)
        if self._error is not None:
            self.stop()
            raise self._error

    def stop(self) -> None:
        """Disconnect and stop the network thread; idempotent."""
        self._link.stop()

    def __enter__(self) -> MqttTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
