"""Where a route delivers: a module's input or upstream. ``Endpoint`` is the one place that
names an endpoint as text (``module:M/INPUT``, ``upstream``) and reads such a name back.

The text form keys the store's queues and labels the hub's metrics, so it is stable. Used by
routing (building deliveries), the hub service (a pump and sink per endpoint), the store and
the CLI's metrics view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["UPSTREAM", "Endpoint"]

UPSTREAM: Final = "upstream"
_MODULE: Final = "module:"


@dataclass(frozen=True, order=True)
class Endpoint:
    """``module`` and ``input`` for a module input; both None for upstream."""

    module: str | None = None
    input: str | None = None

    @classmethod
    def module_input(cls, module: str, input_name: str) -> Endpoint:
        return cls(module, input_name)

    @classmethod
    def upstream(cls) -> Endpoint:
        return cls()

    @classmethod
    def parse(cls, text: str) -> Endpoint | None:
        """``upstream`` or ``module:M/INPUT`` -> the endpoint; None for anything else."""
        if text == UPSTREAM:
            return cls()
        module, slash, input_name = text.removeprefix(_MODULE).partition("/")
        if not text.startswith(_MODULE) or not slash or not module or not input_name:
            return None
        return cls(module, input_name)

    @property
    def is_upstream(self) -> bool:
        return self.module is None

    @property
    def label(self) -> str:
        """How people read it: ``$upstream`` (as in routes) or ``M/INPUT``."""
        return "$upstream" if self.module is None else f"{self.module}/{self.input}"

    def __str__(self) -> str:
        return UPSTREAM if self.module is None else f"{_MODULE}{self.module}/{self.input}"
