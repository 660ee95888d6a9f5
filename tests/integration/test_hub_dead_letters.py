"""``outpost hub dead-letters``: list, re-queue and purge dead letters, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.cli import app
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.service import STORE_FILE, open_store
from outpost.hub.store import UPSTREAM, Delivery, module_endpoint
from outpost.wire.message import Message

NOW = 1_700_000_000.0
FILTER = module_endpoint("filter", "in1")
runner = CliRunner()


def msg(mid: str, body: bytes = b'{"t": 21.5}') -> Message:
    return Message(
        id=mid, body=body, source_device="dev1", source_module="sensor", output="temp", properties={"k": "v"}
    )


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A hub store with three dead letters: two for upstream (one binary), one for a module input."""
    with open_store(tmp_path) as store:
        store.put_batch(
            [
                (msg("big"), [Delivery(UPSTREAM, 1, NOW + 100), Delivery(FILTER, 0, NOW + 100)]),
                (msg("bin", b"\xff\x00"), [Delivery(UPSTREAM, 1, NOW + 100)]),
                (msg("odd"), [Delivery(FILTER, 0, NOW + 100)]),
            ],
            NOW,
        )
        upstream = store.next_batch(UPSTREAM, 10, NOW)
        store.dead_letter(UPSTREAM, [s.seq for s in upstream], "payload too large")
        [_, odd] = store.next_batch(FILTER, 10, NOW)
        store.dead_letter(FILTER, [odd.seq], "not authorised")
    return tmp_path


def test_lists_dead_letters_newest_first_with_reasons(hub_dir: Path) -> None:
    code, out, _ = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--json")
    assert code == 0
    letters = json.loads(out)
    assert [(d["messageId"], d["endpoint"], d["reason"]) for d in letters] == [
        ("odd", FILTER, "not authorised"),
        ("bin", UPSTREAM, "payload too large"),
        ("big", UPSTREAM, "payload too large"),
    ]
    assert letters[1]["bodyBase64"] == "/wA="
    assert letters[2]["body"] == '{"t": 21.5}'
    assert letters[2]["properties"] == {"k": "v"}
    assert letters[2]["sourceModule"] == "sensor"

    code, out, _ = cli("hub", "dead-letters", "--state-dir", str(hub_dir))
    assert code == 0
    assert "payload too large" in out
    assert "not authorised" in out
    code, out, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--limit", "1")
    assert out.count("payload too large") == 0
    assert "2 older" in err


def test_requeue_one_puts_it_back_in_its_queue(hub_dir: Path) -> None:
    letters = json.loads(cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--json")[1])
    big = next(d["id"] for d in letters if d["messageId"] == "big")
    code, out, _ = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--requeue", str(big), "--json")
    assert code == 0
    assert json.loads(out) == {"requeued": [big], "notFound": []}
    with SqliteStore(hub_dir / STORE_FILE) as store:
        [again] = store.next_batch(UPSTREAM, 10, NOW + 200)  # the new expiry is from now, not the old one
        assert again.message == msg("big")
        assert again.priority == 1
        assert [d.message.id for d in store.dead_letters()] == ["odd", "bin"]


def test_requeue_all_restores_bodies_already_deleted(hub_dir: Path) -> None:
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--requeue-all")
    assert code == 0
    assert "re-queued 3" in err
    with SqliteStore(hub_dir / STORE_FILE) as store:
        assert {s.message.id for s in store.next_batch(UPSTREAM, 10, NOW)} == {"big", "bin"}
        assert [s.message.id for s in store.next_batch(FILTER, 10, NOW)] == ["big", "odd"]
        assert next(s for s in store.next_batch(UPSTREAM, 10, NOW) if s.message.id == "bin").message.body == b"\xff\x00"
        assert store.dead_letters() == []


def test_purge_one_and_all(hub_dir: Path) -> None:
    letters = json.loads(cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--json")[1])
    code, out, _ = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--purge", str(letters[0]["id"]), "--json")
    assert (code, json.loads(out)) == (0, {"purged": 1})
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--purge-all")
    assert code == 0
    assert "purged 2" in err
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir))
    assert code == 0
    assert "no dead letters" in err


def test_refusals(hub_dir: Path, tmp_path: Path) -> None:
    code, out, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--requeue", "999", "--json")
    assert code == 1
    assert json.loads(out) == {"requeued": [], "notFound": [999]}
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--purge", "999")
    assert code == 1
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--purge-all", "--requeue-all")
    assert code == 2
    assert "not both" in err
    code, _, err = cli("hub", "dead-letters", "--state-dir", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no hub store" in err
    assert len(json.loads(cli("hub", "dead-letters", "--state-dir", str(hub_dir), "--json")[1])) == 3
