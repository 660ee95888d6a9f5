"""The exceptions Outpost raises, in one place so callers can catch by cause.

Hierarchy::

    OutpostError                    anything Outpost raises on purpose
    ├── InputError                  bad input; names the place; nothing running was touched
    │   ├── ManifestError           a manifest or deployment broke the schema or a rule (all problems)
    │   └── QueryError              a route, route condition or target condition did not parse
    │       └── (line, column)      1-based position of the first bad character
    ├── ModuleRuntimeError          a container/process runtime operation failed (module, action)
    │   ├── TemporaryError          worth retrying later (engine busy, registry unreachable)
    │   └── PermanentError          retrying the same thing cannot help (image missing, bad options)
    ├── StoreError                  the hub's message store failed (disk, corruption, closed)
    ├── BrokerError                 the hub's Mosquitto could not be started/supervised (outpost.hub.broker)
    └── SdkError                    module SDK (outpost.sdk.errors): ConnectError, NotAuthorizedError,
                                    OutboxFullError, SdkTimeoutError(TimeoutError) > MethodTimeoutError

Adapters translate library exceptions into these with ``raise ... from exc`` so the
layers above never see a docker, paho or sqlite exception.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "InputError",
    "ManifestError",
    "ModuleRuntimeError",
    "OutpostError",
    "PermanentError",
    "Problem",
    "QueryError",
    "StoreError",
    "TemporaryError",
]


class OutpostError(Exception):
    """Base class for every error Outpost raises deliberately."""


class InputError(OutpostError):
    """Input (manifest, route, condition, message, HTTP body, model file) was rejected."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: where (RFC 6901 JSON pointer) and what, in a sentence."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class ManifestError(InputError):
    """A manifest or deployment is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.pointer, p.message))
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in manifest:\n{lines}")


class QueryError(InputError):
    """A route or condition failed to parse or compile.

    ``line`` and ``column`` are 1-based and point at the offending character of ``text``.
    """

    def __init__(self, message: str, *, text: str, line: int = 1, column: int = 1) -> None:
        self.reason = message
        self.text = text
        self.line = line
        self.column = column
        super().__init__(f"line {line}, column {column}: {message}")

    def caret(self) -> str:
        """The offending line of the text with a caret under the bad column, for terminals."""
        lines = self.text.splitlines() or [""]
        source = lines[min(self.line, len(lines)) - 1]
        return f"{source}\n{' ' * (self.column - 1)}^"


class ModuleRuntimeError(OutpostError):
    """A runtime (Docker, process) could not do ``action`` for ``module``; ``str()`` says what to do."""

    def __init__(self, message: str, *, module: str = "", action: str = "") -> None:
        self.module = module
        self.action = action
        super().__init__(message)


class TemporaryError(ModuleRuntimeError):
    """Retrying later may succeed (engine restarting, registry unreachable while the image is cached)."""


class PermanentError(ModuleRuntimeError):
    """Retrying cannot help until the deployment changes (image missing, create options refused)."""


class StoreError(OutpostError):
    """The hub's message store could not do what was asked (I/O error, full disk, corrupt file, closed).

    Nothing of the failed call was committed: a failed ``put_batch`` stored none of its messages.
    """
