"""Custom metrics of a deployment: ``SELECT deviceId FROM devices[.modules] WHERE <condition>``.

The shape Azure's docs use for ``metrics.queries``. The WHERE part is a target condition
(:mod:`outpost.lang.target`), evaluated over each device twin (``devices``) or each module
twin (``devices.modules``: ``moduleId``, ``properties.reported``...). A query counts the
distinct devices it selects among the devices the deployment targets. Called by
:mod:`outpost.fleet.status`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outpost.errors import QueryError
from outpost.lang import TargetCondition, compile_target

__all__ = ["MetricQuery", "compile_query"]

_SHAPE = re.compile(
    r"\s*SELECT\s+deviceId\s+FROM\s+devices(?P<modules>\.modules)?(?:\s+WHERE\s+(?P<where>.*?))?\s*",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class MetricQuery:
    text: str
    over_modules: bool
    condition: TargetCondition

    def devices(self, twins: Iterable[tuple[Mapping[str, Any], Iterable[Mapping[str, Any]]]]) -> list[str]:
        """Ids of the devices selected, from (device twin, its module twins) pairs."""
        selected: list[str] = []
        for device, modules in twins:
            rows = modules if self.over_modules else (device,)
            if any(self.condition(row) for row in rows):
                selected.append(str(device.get("deviceId")))
        return selected


def compile_query(text: str) -> MetricQuery:
    """Parse one metrics query; QueryError names line and column of what is wrong."""
    match = _SHAPE.fullmatch(text)
    if match is None:
        raise QueryError(
            "expected SELECT deviceId FROM devices [WHERE condition] or SELECT deviceId FROM devices.modules "
            "[WHERE condition]",
            text=text,
        )
    where = match.group("where")
    if where is None:
        return MetricQuery(text, bool(match.group("modules")), compile_target("*"))
    offset = match.start("where")
    try:
        condition = compile_target(where)
    except QueryError as exc:
        before = text[:offset]
        line = before.count("\n") + exc.line
        column = exc.column + (len(before) - before.rfind("\n") - 1 if exc.line == 1 else 0)
        raise QueryError(exc.reason, text=text, line=line, column=column) from exc
    return MetricQuery(text, bool(match.group("modules")), condition)
