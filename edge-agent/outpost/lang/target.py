"""Target conditions: which devices an automatic deployment applies to.

This is the WHERE clause of IoT Hub's twin query language, e.g.
``tags.environment = 'test' AND properties.reported.devicemodel = '4000x'``, or ``*`` for
every device. It shares the expression grammar and compiler with route conditions; only
name resolution differs: names are paths into a twin document, checked against the
twin's top-level fields so that a typo (``tag.x``) fails at deployment time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from lark import Token

from outpost.errors import QueryError
from outpost.lang.compiler import Evaluator, compile_node
from outpost.lang.functions import FUNCTIONS, Function
from outpost.lang.nodes import Node, Ref, RefKind, Step, build, steps_text
from outpost.lang.parser import error_at, parse
from outpost.lang.values import UNDEFINED

__all__ = ["TARGET_FUNCTIONS", "TWIN_FIELDS", "TargetCondition", "cohort_place", "compile_target"]


def cohort_place(key: str, device_id: str) -> float:
    """A device's stable place in [0, 100) for ``key`` (a rollout's name): sha256 of both, as a fraction."""
    digest = hashlib.sha256(f"{key}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 * 100.0


def _cohort(device_id: object, key: object) -> object:
    if not isinstance(device_id, str) or not isinstance(key, str):
        return UNDEFINED
    return cohort_place(key, device_id)


TARGET_FUNCTIONS: Final[Mapping[str, Function]] = {
    **FUNCTIONS,
    "OUTPOST_COHORT": Function("OUTPOST_COHORT", 2, 2, _cohort),
}
"""The query language's functions plus one Outpost extension, for target conditions only:
``OUTPOST_COHORT(deviceId, 'key')`` is the device's stable place in [0, 100) for ``key``, so
``OUTPOST_COHORT(deviceId, 'motor-v2') < 25`` selects a stable quarter of any group in constant
space (rollouts use it). IoT Hub does not know it: a deployment using it stays with Outpost."""

TWIN_FIELDS: Final = (
    "deviceId",
    "moduleId",
    "tags",
    "properties",
    "capabilities",
    "status",
    "statusReason",
    "connectionState",
    "lastActivityTime",
    "authenticationType",
    "deviceScope",
    "parentScopes",
    "modelId",
    "version",
    "etag",
)
"""Top-level twin fields a target condition may read (matched case-insensitively)."""

_CANONICAL: Final = {name.lower(): name for name in TWIN_FIELDS}
_SECTIONS: Final = {"reported": "reported", "desired": "desired"}


class TargetCondition:
    """A compiled target condition: call it with a twin ``dict``; true only if it evaluates to true."""

    __slots__ = ("_paths", "evaluate", "text")

    def __init__(self, text: str, evaluate: Evaluator, paths: tuple[str, ...]) -> None:
        self.text = text
        self.evaluate = evaluate
        self._paths = paths

    def __call__(self, twin: Mapping[str, Any]) -> bool:
        return self.evaluate(twin)

    def paths(self) -> tuple[str, ...]:
        """Twin paths the condition reads, in order of first use (``tags.environment``...)."""
        return self._paths

    @property
    def matches_all(self) -> bool:
        """True for ``*``."""
        return self.text.strip() == "*"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TargetCondition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("TargetCondition", self.text))

    def __repr__(self) -> str:
        return f"TargetCondition({self.text!r})"


def compile_target(text: str) -> TargetCondition:
    """Parse and compile a target condition; raise QueryError if invalid."""
    tree = parse(text, "start_target")
    if tree.data == "match_all":
        return TargetCondition(text, _everything, ())
    paths: dict[str, None] = {}

    def resolve(source: str, name: Token, steps: tuple[Step, ...]) -> Node:
        ref = _resolve(source, name, steps)
        paths[steps_text(ref.name, ref.steps)] = None
        return ref

    node = build(text, tree.children[0], resolve, TARGET_FUNCTIONS)
    try:
        evaluate = compile_node(node)
    except Exception as exc:  # compile() limits: report, never leak SyntaxError/RecursionError
        raise QueryError(f"condition is too complex to compile ({type(exc).__name__})", text=text) from exc
    return TargetCondition(text, evaluate, tuple(paths))


def _everything(_twin: object) -> bool:
    return True


def _resolve(text: str, name: Token, steps: tuple[Step, ...]) -> Ref:
    raw = str(name.value)
    offset = name.start_pos or 0
    field = _CANONICAL.get(raw.lower())
    if field is None:
        hint = "; $-names and $body belong to route conditions" if raw.startswith("$") else ""
        raise error_at(text, offset, f"unknown twin field {raw!r}; expected one of {', '.join(TWIN_FIELDS)}{hint}")
    if field == "properties" and steps:
        section = _SECTIONS.get(str(steps[0]).lower())
        if section is None:
            raise error_at(
                text, offset, f"expected properties.reported or properties.desired, found properties.{steps[0]}"
            )
        steps = (section, *steps[1:])
    return Ref(RefKind.TWIN, field, steps)
