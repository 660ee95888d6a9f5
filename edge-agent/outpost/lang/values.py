"""The value model shared by both query languages.

Values are plain JSON values (``None``, ``bool``, ``int``, ``float``, ``str``, ``list``,
``dict``) plus ``UNDEFINED``: the result of reading something that is not there or of an
operation whose operands do not fit. IoT Hub's query language keeps *undefined* apart
from ``null``, so it needs its own singleton rather than ``None``.
"""

from __future__ import annotations

from typing import Final, final

__all__ = ["UNDEFINED", "Undefined"]


@final
class Undefined:
    """Type of the single ``UNDEFINED`` value; falsy and only ever identical to itself."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()
