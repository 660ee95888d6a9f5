"""Direct methods of ``ModuleClient``: answering calls to this module, and calling others.

Calls go out as a request PUBLISH naming a response topic and correlation data; the response
(or the broker's refusal of the request) completes the waiting ``Call``. Handlers of incoming
calls run on the methods worker and answer on the caller's response topic. ``on_*`` methods
run under the client's lock on the event thread; ``run`` on the methods worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outpost.sdk.errors import NotAuthorizedError, SdkError
from outpost.wire import topics
from outpost.wire.link import NOT_AUTHORIZED, Incoming, Link, Published

__all__ = ["STATUS_PROPERTY", "Call", "MethodHandler", "Methods", "decode", "encode"]

log = logging.getLogger("outpost.sdk.client")

#: ``handler(payload) -> (status, payload)``; payloads are JSON values (None when empty).
MethodHandler = Callable[[Any], tuple[int, Any]]

JSON = "application/json"
STATUS_PROPERTY = "status"  # user property of a method response carrying the status code


def encode(payload: Any) -> bytes:
    return b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()


def decode(body: bytes) -> Any:
    return json.loads(body) if body.strip() else None


@dataclass
class Call:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    payload: Any = None
    error: SdkError | None = None


class Methods:
    """One module's method handlers and its calls in flight."""

    def __init__(self, *, device_id: str, module_id: str, username: str | None) -> None:
        self.device_id = device_id
        self.module_id = module_id
        self._username = username
        self.handlers: dict[str, MethodHandler] = {}
        self.calls: dict[bytes, Call] = {}
        self.invoker = False  # subscribed to responses (from the first call on)

    def response_filter(self) -> str:
        return topics.method_responses(self.device_id, self.module_id)

    # -- calling (caller's thread, under the client's lock) ---------------------------------------

    def call(self, link: Link, target: str, method: str, payload: Any, deadline: float) -> tuple[bytes, Call, int]:
        """Publish a request; returns its correlation, the call to wait on, and the PUBLISH token."""
        correlation = uuid.uuid4().bytes
        call = Call()
        self.calls[correlation] = call
        token = link.publish(
            topics.method_request(self.device_id, target, method),
            encode(payload),
            content_type=JSON,
            response_topic=topics.method_response(self.device_id, target, self.module_id, correlation.hex()),
            correlation_data=correlation,
            expiry=max(1, math.ceil(deadline - time.monotonic())),
        )
        return correlation, call, token

    def on_request_published(self, event: Published, correlation: bytes) -> None:
        """The broker's PUBACK of a request: a refusal ends the call at once."""
        call = self.calls.get(correlation)
        if event.ok or call is None:
            return
        call.error = (
            NotAuthorizedError(f"{self._username!r} may not call direct methods: {event.reason}")
            if event.code == NOT_AUTHORIZED
            else SdkError(f"the broker refused the method call: {event.reason}")
        )
        call.done.set()

    def on_response(self, event: Incoming) -> bool:
        """A response to one of our calls; False when the message is none."""
        if event.correlation_data is None or event.correlation_data not in self.calls:
            return False
        call = self.calls[event.correlation_data]
        status = dict(event.user_properties).get(STATUS_PROPERTY, "0")
        try:
            call.status, call.payload = int(status), decode(event.payload)
        except ValueError as exc:
            call.error = SdkError(f"malformed method response: {exc}")
        call.done.set()
        return True

    # -- answering (methods worker) ---------------------------------------------------------------

    def run(self, name: str, event: Incoming, link: Link | None) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            status, result = 501, {"message": f"method {name!r} is not registered by module {self.module_id!r}"}
        else:
            try:
                status, result = handler(decode(event.payload))
            except Exception as exc:
                log.exception("%s: method %r failed", self.module_id, name)
                status, result = 500, {"message": f"{type(exc).__name__}: {exc}"}
        if event.response_topic is None or link is None:
            log.warning("%s: method %r request had no response topic; not answered", self.module_id, name)
            return
        with contextlib.suppress(OSError):
            link.publish(
                event.response_topic,
                encode(result),
                user_properties=[(STATUS_PROPERTY, str(int(status)))],
                content_type=JSON,
                correlation_data=event.correlation_data,
            )
