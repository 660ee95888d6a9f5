"""Upstream sinks: where ``$upstream`` deliveries go (Kafka, an MQTT cloud broker, Azure IoT Hub).

Every send reports succeeded / retryable / never-deliverable (iotedge's ``ISinkResult``), so
the pump acks what succeeded, dead-letters what can never succeed and retries the rest.
Implementations live in ``outpost.hub.adapters`` and translate their library's errors.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from outpost.hub.store import Stored

__all__ = ["FailureKind", "Guard", "Sink", "SinkResult", "never_raise"]

log = logging.getLogger("outpost.hub.sinks")


class FailureKind(StrEnum):
    NONE = "none"
    UNREACHABLE = "unreachable"  # the upstream is down or the link is: retry when it is back
    THROTTLED = "throttled"
    INVALID = "invalid"  # the message itself is refused: never retry it
    INTERNAL = "internal"


@dataclass
class SinkResult:
    succeeded: list[int] = field(default_factory=list)  # store seqs
    retryable: list[int] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (seq, why)
    failure: FailureKind = FailureKind.NONE
    detail: str = ""


class Sink(Protocol):
    name: str

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        """Deliver a batch (in order); returns what happened to each seq. Never raises."""
        ...

    def connected(self) -> bool:
        """Whether the upstream is believed reachable now (a pump drains at once when it turns True)."""
        ...

    def close(self) -> None: ...


@dataclass
class Guard:
    """What ``never_raise`` saw: ``raised`` is the exception a send let out, if any."""

    raised: Exception | None = None


@contextlib.contextmanager
def never_raise(sink: str, batch: Sequence[Stored], result: SinkResult) -> Iterator[Guard]:
    """The ``Sink.send`` contract for every sink: a bug or an unexpected library error inside the
    block is logged and turns whatever the send had not decided yet into retryable (``INTERNAL``)."""
    guard = Guard()
    try:
        yield guard
    except Exception as exc:
        log.exception("%s sink: unexpected error", sink)
        decided = set(result.succeeded) | set(result.retryable) | {seq for seq, _ in result.invalid}
        result.retryable.extend(item.seq for item in batch if item.seq not in decided)
        result.failure, result.detail = FailureKind.INTERNAL, f"unexpected {type(exc).__name__}: {exc}"
        guard.raised = exc
