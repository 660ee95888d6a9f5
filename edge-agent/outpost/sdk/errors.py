"""The SDK's exceptions (all ``outpost.errors.OutpostError``); raised by ``outpost.sdk.client``.

Hierarchy::

    SdkError(OutpostError)
    ├── ConnectError          the broker refused the credentials, or was unreachable for the whole timeout
    ├── NotAuthorizedError    the broker refused a publish (MQTT 5 reason code 0x87): outside the ACLs
    ├── OutboxFullError       ``send`` waited ``send_timeout`` for outbox space (the hub is not receipting)
    └── SdkTimeoutError       a bounded wait ran out (``flush``, ``twin``); also a ``TimeoutError``
        └── MethodTimeoutError  no response to ``invoke_method`` within its timeout
"""

from __future__ import annotations

from outpost.errors import OutpostError

__all__ = ["ConnectError", "MethodTimeoutError", "NotAuthorizedError", "OutboxFullError", "SdkError", "SdkTimeoutError"]


class SdkError(OutpostError):
    """Base class of the module SDK's errors."""


class ConnectError(SdkError):
    """Could not connect: wrong credentials (not retried) or no broker within the timeout."""


class NotAuthorizedError(SdkError):
    """The broker refused a publish: the module's ACLs (docs/hub.md) do not allow that topic."""


class OutboxFullError(SdkError):
    """The in-memory outbox is full: the hub has not receipted older messages (is it running?)."""


class SdkTimeoutError(SdkError, TimeoutError):
    """A bounded wait of the SDK ran out."""


class MethodTimeoutError(SdkTimeoutError):
    """A direct method call got no response within its timeout."""

    def __init__(self, target: str, method: str, timeout: float) -> None:
        self.target = target
        self.method = method
        self.timeout = timeout
        super().__init__(f"direct method {method!r} on module {target!r} got no response within {timeout:g} s")
