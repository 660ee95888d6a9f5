"""How the CLI talks: data to stdout (plain or ``--json``), people-facing text to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["err", "parse_assignments", "print_json", "print_list"]


def _console(*, stderr: bool) -> Console:
    """A console that, when piped, is wide enough that tables are not cut to 80 columns."""
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 200)


err = _console(stderr=True)
out = _console(stderr=False)


def print_json(data: Any) -> None:
    """Pretty JSON on stdout, stable key order as given, for scripts and pipes."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_list(
    items: Sequence[Any], *, json_out: bool, title: str, columns: Sequence[str], row: Callable[[Any], Sequence[str]]
) -> None:
    """What a ``list`` command fetched: as JSON with ``--json``, else a table titled ``title``, one
    row per item. ``row`` gives the cells, which are rich markup: escape what users wrote."""
    if json_out:
        print_json(items)
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for item in items:
        table.add_row(*row(item))
    out.print(table)


def _value(text: str) -> Any:
    """``3`` -> 3, ``true`` -> True, ``"x"`` -> "x", anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(
    items: list[str] | None, option: str, *, typed: bool = True, nested: bool = True
) -> dict[str, Any]:
    """Turn repeated ``k=v`` options into a dict; with ``nested``, ``a.b=1`` -> ``{"a": {"b": 1}}``.

    A malformed item is a usage error (``typer.BadParameter``: "Usage: ...", exit 2) naming the option.
    """
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expects KEY=VALUE, got {item!r}", param_hint=f"'{option}'")
        node = result
        parts = key.split(".") if nested else [key]
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise typer.BadParameter(
                    f"{item!r}: '{part}' is already a value, not an object", param_hint=f"'{option}'"
                )
            node = child
        node[parts[-1]] = _value(raw) if typed else raw
    return result
