"""cli.output.print_list: the shared printer of the ``list`` commands (model, rollout, device)."""

from __future__ import annotations

import json

import pytest
from rich.markup import escape

from outpost.cli.output import print_list

ITEMS = [{"name": "gw-[1]", "n": 3}, {"name": "gw-2", "n": 10}]


def _print(json_out: bool) -> None:
    print_list(
        ITEMS,
        json_out=json_out,
        title=f"{len(ITEMS)} thing(s)",
        columns=("thing", "count"),
        row=lambda item: (escape(item["name"]), str(item["n"])),
    )


def test_json_is_the_items_as_fetched(capsys: pytest.CaptureFixture[str]) -> None:
    _print(json_out=True)
    assert json.loads(capsys.readouterr().out) == ITEMS


def test_table_has_the_title_the_columns_and_a_row_per_item(capsys: pytest.CaptureFixture[str]) -> None:
    _print(json_out=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].strip() == "2 thing(s)"
    assert lines[2].split() == ["┃", "thing", "┃", "count", "┃"]
    rows = [line.split() for line in lines[4:-1]]
    assert rows == [["│", "gw-[1]", "│", "3", "│"], ["│", "gw-2", "│", "10", "│"]]  # markup escaped, not eaten
