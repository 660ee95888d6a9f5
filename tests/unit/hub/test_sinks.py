"""The one guard every sink's send runs under: nothing escapes, nothing decided is lost."""

from __future__ import annotations

import pytest

from outpost.hub.sinks import FailureKind, SinkResult, never_raise
from outpost.hub.store import UPSTREAM, Stored
from outpost.wire.message import Message


def stored(seq: int) -> Stored:
    return Stored(seq, UPSTREAM, 0, 0.0, 1e12, Message(id=f"m{seq}", body=b"x", source_device="d"))


def test_an_exception_makes_what_was_undecided_retryable(caplog: pytest.LogCaptureFixture) -> None:
    batch = [stored(n) for n in range(1, 6)]
    result = SinkResult()
    with never_raise("test", batch, result) as guard:
        result.succeeded.append(1)
        result.invalid.append((2, "too big"))
        result.retryable.append(3)
        raise RuntimeError("bug")
    assert result.succeeded == [1]
    assert result.invalid == [(2, "too big")]
    assert result.retryable == [3, 4, 5]
    assert (result.failure, result.detail) == (FailureKind.INTERNAL, "unexpected RuntimeError: bug")
    assert isinstance(guard.raised, RuntimeError)
    assert "test sink: unexpected error" in caplog.text


def test_a_clean_send_is_untouched() -> None:
    result = SinkResult(succeeded=[1])
    with never_raise("test", [stored(1)], result) as guard:
        pass
    assert result == SinkResult(succeeded=[1])
    assert guard.raised is None
