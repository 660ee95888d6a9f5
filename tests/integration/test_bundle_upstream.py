"""Offline bundle up through the real hub (Mosquitto, SQLite store) and real Kafka: a site with no
upstream queues messages; export them (signed by the device, nothing removed), import into Kafka
(duplicates dropped by id, twice = nothing twice), and the receipt releases exactly what it names."""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

from integration.conftest_kafka import read_topic
from integration.conftest_mosquitto import wait_for
from integration.hub_harness import DEVICE, OUTPOST, hub_manifest
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.store import UPSTREAM

N = 300
UP = {"up": "FROM /messages/modules/alpha/outputs/* INTO $upstream"}


def outpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def queued_ids(hub_state: Path) -> list[str]:
    store = SqliteStore(hub_state / "store.db")
    try:
        return [s.message.id for s in store.next_batch(UPSTREAM, 100_000, 0.0)]
    finally:
        store.close()


def site(tmp_path: Path, hub_factory: Any, module_factory: Any, count: int = N) -> list[str]:
    """A hub with no upstream (the site is offline) and ``count`` messages queued for $upstream."""
    hub = hub_factory(hub_manifest(UP, hub_ext={"upstream": {"sink": "none"}}))
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    sent = [alpha.send("out", json.dumps({"i": i}).encode(), content_type="application/json") for i in range(count)]
    alpha.flush(timeout=60)
    assert hub.store is not None
    wait_for(lambda: hub.store.depth(UPSTREAM) == count, timeout=30, what="the messages queued on disk")
    return sent


def test_round_trip_up_into_kafka_with_receipt(hub_factory, module_factory, kafka, tmp_path):
    sent = site(tmp_path, hub_factory, module_factory)
    device = ["--state-dir", str(tmp_path / "state"), "--hub-state", str(tmp_path / "hub"), "--device-id", DEVICE]
    export = tmp_path / "out.tar"
    done = outpost("bundle", "export-upstream", "-o", str(export), *device, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["messages"] == N
    assert sorted(queued_ids(tmp_path / "hub")) == sorted(sent)  # nothing removed by the export

    topic = f"site-{uuid.uuid4().hex[:8]}"
    up = hub_manifest({}, hub_ext={"upstream": {"sink": "kafka", "kafka": {"bootstrapServers": kafka, "topic": topic}}})
    (tmp_path / "up.json").write_text(json.dumps(up))
    assert outpost("keys", "generate", "-o", str(tmp_path / "operator"), cwd=tmp_path).returncode == 0
    importer = ["--manifest", str(tmp_path / "up.json"), "--ledger", str(tmp_path / "ledger"),
                "--sign-key", str(tmp_path / "operator.key"), "--json"]  # fmt: skip

    # A tampered export is refused and delivers nothing.
    with tarfile.open(export) as tar:
        offset = tar.getmember("messages.jsonl").offset_data
    bad = tmp_path / "bad.tar"
    raw = bytearray(export.read_bytes())
    raw[offset + 10] ^= 0x01
    bad.write_bytes(bytes(raw))
    refused = outpost("bundle", "import-upstream", str(bad), *importer, "-r", str(tmp_path / "x.json"), cwd=tmp_path)
    assert refused.returncode == 1
    assert "altered" in refused.stderr

    first = outpost("bundle", "import-upstream", str(export), *importer, "-r", str(tmp_path / "r1.json"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"receipt": None, "reported": None} == {
        "receipt": None, "reported": None, "delivered": N, "duplicates": 0, "notDelivered": 0, "failure": None,
    }  # fmt: skip
    again = outpost("bundle", "import-upstream", str(export), *importer, "-r", str(tmp_path / "r2.json"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["delivered"], json.loads(again.stdout)["duplicates"]) == (0, N)
    records = read_topic(kafka, topic, N + 1, timeout=8)  # waits for one more than should be there
    ids = [dict(r.headers)["$.mid"].decode() for r in records]
    assert sorted(ids) == sorted(sent)  # every id once at the far end
    receipt = json.loads((tmp_path / "r1.json").read_text())
    assert sorted(receipt["messages"]) == sorted(sent)
    assert json.loads((tmp_path / "r2.json").read_text())["messages"] == receipt["messages"]
    assert "$edgeAgent" in json.loads((tmp_path / "r1.reported.json").read_text())

    # Back on the device, with a trust root: a changed receipt is refused, the real one releases.
    state = ["--state-dir", str(tmp_path / "state")]
    assert outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path).returncode == 0
    forged = dict(receipt, messages=[*receipt["messages"], "f" * 32])
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    no = outpost("bundle", "receipt", str(tmp_path / "forged.json"), *device, cwd=tmp_path)
    assert no.returncode == 1
    assert "changed after signing" in no.stderr
    assert len(queued_ids(tmp_path / "hub")) == N
    yes = outpost("bundle", "receipt", str(tmp_path / "r1.json"), *device, "--json", cwd=tmp_path)
    assert yes.returncode == 0, yes.stderr
    assert json.loads(yes.stdout) == {"released": N, "alreadyGone": 0}
    assert queued_ids(tmp_path / "hub") == []


def test_receipt_releases_exactly_what_it_names(hub_factory, module_factory, tmp_path):
    sent = site(tmp_path, hub_factory, module_factory, count=40)
    device = ["--state-dir", str(tmp_path / "state"), "--hub-state", str(tmp_path / "hub"), "--device-id", DEVICE]
    half = sorted(sent)[:20]
    receipt = {"format": "outpost-receipt/1", "deviceId": DEVICE, "messages": half}
    (tmp_path / "half.json").write_text(json.dumps(receipt))
    other = dict(receipt, deviceId="another-device")
    (tmp_path / "other.json").write_text(json.dumps(other))
    wrong = outpost("bundle", "receipt", str(tmp_path / "other.json"), *device, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "not 'hubdev'" in wrong.stderr
    done = outpost("bundle", "receipt", str(tmp_path / "half.json"), *device, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"released": 20, "alreadyGone": 0}
    assert sorted(queued_ids(tmp_path / "hub")) == sorted(set(sent) - set(half))
    again = outpost("bundle", "receipt", str(tmp_path / "half.json"), *device, "--json", cwd=tmp_path)
    assert json.loads(again.stdout) == {"released": 0, "alreadyGone": 20}


def test_reported_properties_reach_the_fleet_only_with_the_registered_device_key(
    hub_factory, module_factory, kafka, tmp_path
):
    """`import-upstream --fleet`: the fleet takes the export's reported properties only when the export
    is signed by the key an operator registered for that device; a second import is dropped."""
    from integration.fleet_harness import FleetProcess

    site(tmp_path, hub_factory, module_factory, count=5)
    twins = tmp_path / "hub" / "twins"
    twins.mkdir(parents=True, exist_ok=True)
    (twins / "reported-alpha.json").write_text(json.dumps({"model": {"version": "7"}, "rpm": 1480}))
    state = tmp_path / "state"
    device = ["--state-dir", str(state), "--hub-state", str(tmp_path / "hub"), "--device-id", DEVICE]
    export = tmp_path / "out.tar"
    assert outpost("bundle", "export-upstream", "-o", str(export), *device, cwd=tmp_path).returncode == 0
    sink = {"sink": "kafka", "kafka": {"bootstrapServers": kafka, "topic": f"r-{uuid.uuid4().hex[:8]}"}}
    up = hub_manifest({}, hub_ext={"upstream": sink})
    (tmp_path / "up.json").write_text(json.dumps(up))
    fleet = FleetProcess(tmp_path / "fleet").start()
    try:
        conn = ["--fleet", fleet.url, "--token", fleet.token]
        importer = ["--manifest", str(tmp_path / "up.json"), "--ledger", str(tmp_path / "ledger"), *conn]
        assert outpost("device", "add", DEVICE, *conn, cwd=tmp_path).returncode == 0

        # another device's key registered for this device: refused, nothing reported
        assert outpost("keys", "generate", "-o", str(tmp_path / "other"), cwd=tmp_path).returncode == 0
        assert (
            outpost("device", "signing-key", DEVICE, str(tmp_path / "other.pub"), *conn, cwd=tmp_path).returncode == 0
        )
        wrong = outpost(
            "bundle", "import-upstream", str(export), *importer, "-r", str(tmp_path / "r0.json"), cwd=tmp_path
        )
        assert wrong.returncode == 1
        assert "key registered for" in wrong.stderr.replace("\n", " ")

        shown = outpost("agent", "trust", "device-key", "-o", str(tmp_path / "device.pub"), "--state-dir", str(state),
                        cwd=tmp_path)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert (
            outpost("device", "signing-key", DEVICE, str(tmp_path / "device.pub"), *conn, cwd=tmp_path).returncode == 0
        )
        first = outpost("bundle", "import-upstream", str(export), *importer, "-r", str(tmp_path / "r1.json"), "--json",
                        cwd=tmp_path)  # fmt: skip
        assert first.returncode == 0, first.stderr
        result = json.loads(first.stdout)["fleet"]
        assert result["applied"] is True
        assert "alpha" in result["modules"]
        again = outpost("bundle", "import-upstream", str(export), *importer, "-r", str(tmp_path / "r2.json"), "--json",
                        cwd=tmp_path)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["fleet"]["duplicate"] is True
        with fleet.client() as operator:
            twin = operator.get(f"/api/v1/devices/{DEVICE}")  # the device twin with its module twins
            assert twin.status_code == 200, twin.text
        assert '"rpm": 1480' in json.dumps(twin.json())
    finally:
        fleet.stop()
