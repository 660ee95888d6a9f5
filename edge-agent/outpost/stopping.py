"""SIGINT/SIGTERM -> a ``threading.Event``, safely: the one way every Outpost process stops.

Why not ``signal.signal(sig, lambda *_: stop.set())``: the handler runs on the main thread, which may
hold ``stop``'s own lock (inside ``stop.wait``) at that moment, and ``Event.set`` would then wait for
it forever. Setting the event from a short-lived thread cannot deadlock.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["stop_on_signals"]


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """Make SIGINT and SIGTERM set ``stop`` (a new event when none is given) and return it.

    Call it from the main thread (signal handlers can only be installed there).
    """
    event = stop or threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        threading.Thread(target=event.set, name="outpost-stop", daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    return event
