"""stop_on_signals: SIGTERM/SIGINT set the event, also while the main thread waits on it."""

from __future__ import annotations

import os
import signal
import threading

from outpost.stopping import stop_on_signals


def test_a_signal_during_wait_sets_the_event_and_handlers_are_restored_after():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            stop = stop_on_signals()
            timer = threading.Timer(0.2, os.kill, (os.getpid(), sig))
            timer.start()
            assert stop.wait(10), f"{sig.name} did not set the event"
            timer.join()
        given = threading.Event()
        assert stop_on_signals(given) is given
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
