"""The edge hub end to end: real Mosquitto (supervised by the hub), real SQLite, SDK modules.

Every message carries an id and is counted at the far end: zero loss, duplicates counted.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from integration.conftest_mosquitto import free_port, wait_for
from integration.hub_harness import ALPHA_TO_BETA, DEVICE, OUTPOST, Counter, hub_manifest
from outpost.sdk import ModuleClient
from outpost.wire.credentials import device_key, module_password


def test_module_to_module_in_order_once_with_twin(hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA))
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    sent = [alpha.send("out", {"n": n, "temperature": 20 + n % 50}) for n in range(500)]
    alpha.flush(timeout=60)
    wait_for(lambda: got.count() >= 500, timeout=60, what="500 messages at beta")
    assert got.ids == sent  # in order, each once
    assert beta.twin()["threshold"] == 0.5
    time.sleep(0.5)
    assert hub.store is not None
    assert hub.store.depth("module:beta/in") == 0


def test_conditions_unrouted_and_malformed_bodies_do_not_block(hub_factory, module_factory):
    source = "FROM /messages/modules/alpha/outputs/*"
    routes = {
        "hot": f'{source} WHERE $body.temperature > 50 INTO BrokeredEndpoint("/modules/beta/inputs/hot")',
        "tagged": f"{source} WHERE severity = 'high' INTO BrokeredEndpoint(\"/modules/beta/inputs/sev\")",
    }
    hub = hub_factory(hub_manifest(routes))
    beta = module_factory(hub, "beta")
    hot, sev = Counter(), Counter()
    beta.on_input("hot", hot)
    beta.on_input("sev", sev)
    beta.connect()
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    alpha.send("out", {"temperature": 20})  # matches nothing: unrouted
    alpha.send("out", b"{not json", content_type="application/json")  # malformed body: $body undefined
    hot_id = alpha.send("out", {"temperature": 71})
    both_id = alpha.send("out", {"temperature": 90}, {"severity": "high"})
    alpha.flush(timeout=30)
    wait_for(lambda: hot.count() == 2 and sev.count() == 1, what="routed deliveries")
    assert hot.ids == [hot_id, both_id]
    assert sev.ids == [both_id]  # one message, two inputs: delivered and acked once per input
    wait_for(lambda: hub.store.depth("module:beta/hot") == 0 and hub.store.depth("module:beta/sev") == 0,
             what="both deliveries acked")  # fmt: skip


def test_offline_module_gets_its_backlog_when_it_comes_back(hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA))
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    sent = [alpha.send("out", {"n": n}) for n in range(200)]
    alpha.flush(timeout=30)  # receipted: on disk in the hub, beta has never connected
    assert hub.store.depth("module:beta/in") == 200
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    wait_for(lambda: got.count() >= 200, timeout=60, what="the backlog at beta")
    assert got.ids == sent


def test_route_change_under_load_loses_nothing(hub_factory, module_factory):
    document = hub_manifest(ALPHA_TO_BETA)
    hub = hub_factory(document)
    beta, gamma = module_factory(hub, "beta"), module_factory(hub, "gamma")
    at_beta, at_gamma = Counter(), Counter()
    beta.on_input("in", at_beta)
    gamma.on_input("in", at_gamma)
    beta.connect()
    gamma.connect()
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    stop = threading.Event()
    sent: list[str] = []

    def load() -> None:
        n = 0
        while not stop.is_set():
            sent.append(alpha.send("out", {"n": n}))
            n += 1
            time.sleep(0.001)

    sender = threading.Thread(target=load)
    sender.start()
    time.sleep(1.0)
    changed = hub_manifest(
        {"a2g": 'FROM /messages/modules/alpha/outputs/out INTO BrokeredEndpoint("/modules/gamma/inputs/in")'}
    )
    hub.apply(changed)
    time.sleep(1.0)
    stop.set()
    sender.join()
    alpha.flush(timeout=60)
    wait_for(lambda: at_beta.count() + at_gamma.count() >= len(sent), timeout=60, what="every message somewhere")
    assert sorted(at_beta.ids + at_gamma.ids) == sorted(sent)  # each exactly once, before or after the change
    assert at_beta.count() > 0
    assert at_gamma.count() > 0


def test_broker_killed_and_restarted_loses_nothing(hub_factory, module_factory):
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA))
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha = module_factory(hub, "alpha", resend_after=1.0)
    alpha.connect()
    sent = [alpha.send("out", {"n": n}) for n in range(300)]
    assert hub.broker is not None
    assert hub.broker.pid
    hub.broker_pid_before = hub.broker.pid
    import os

    os.kill(hub.broker.pid, signal.SIGKILL)
    sent += [alpha.send("out", {"n": n}) for n in range(300, 600)]
    alpha.flush(timeout=90)
    wait_for(lambda: len(set(got.ids)) >= 600, timeout=90, what="all 600 at beta after the broker crash")
    assert set(got.ids) == set(sent)
    assert len(got.ids) == len(set(got.ids))  # the SDK dropped redeliveries before the handler
    assert hub.broker.restarts >= 1


def test_bad_manifest_leaves_the_hub_running_its_routes(hub_factory, module_factory):
    from outpost.errors import ManifestError

    hub = hub_factory(hub_manifest(ALPHA_TO_BETA))
    with pytest.raises(ManifestError):
        hub.apply(hub_manifest({"bad": "FROM /messages/* WHERE INTO $upstream"}))
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha = module_factory(hub, "alpha")
    alpha.connect()
    mid = alpha.send("out", {"still": "routed"})
    wait_for(lambda: got.ids == [mid], what="delivery under the old routes")


def _hub_process(tmp_path: Path, manifest_path: Path, port: int) -> subprocess.Popen[bytes]:
    args = [OUTPOST, "hub", "run", "--manifest", str(manifest_path), "--state-dir", str(tmp_path / "hub"),
            "--device-id", DEVICE, "--port", str(port), "--metrics-port", "0"]  # fmt: skip
    log = (tmp_path / "hub.log").open("ab")
    try:
        return subprocess.Popen(args, stdout=log, stderr=log)
    finally:
        log.close()


def _client(tmp_path: Path, port: int, name: str, **kw: Any) -> ModuleClient:
    return ModuleClient(device_id=DEVICE, module_id=name, password=module_password(device_key(tmp_path), name),
                        port=port, **kw)  # fmt: skip


def test_hub_killed_with_9_under_load_and_restarted_loses_nothing(tmp_path, mosquitto_installed):
    port = free_port()
    path = tmp_path / "m.json"
    path.write_text(json.dumps(hub_manifest(ALPHA_TO_BETA)))
    hub = _hub_process(tmp_path, path, port)
    got = Counter()
    alpha = beta = None
    try:
        wait_for(lambda: _port_open(port), timeout=30, what="the hub's broker")
        beta = _client(tmp_path, port, "beta")
        beta.on_input("in", got)
        beta.connect(timeout=30)
        alpha = _client(tmp_path, port, "alpha", resend_after=1.0, max_outbox=100_000)
        alpha.connect(timeout=30)
        sent: list[str] = []
        for round_ in range(3):
            sent += [alpha.send("out", {"round": round_, "n": n}) for n in range(1000)]
            time.sleep(0.2)
            hub.send_signal(signal.SIGKILL)  # mid-load: messages in the broker, in ingress, in delivery
            hub.wait(timeout=10)
            sent += [alpha.send("out", {"round": round_, "n": n}) for n in range(1000, 1500)]
            hub = _hub_process(tmp_path, path, port)
        alpha.flush(timeout=120)
        wait_for(lambda: set(got.ids) >= set(sent), timeout=120, what="every message at beta")
        assert len(got.ids) == len(set(got.ids)) == len(sent)  # none lost, none handled twice
    finally:
        for client in (alpha, beta):
            if client is not None:
                client.close(timeout=2)
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=30)


def _port_open(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_disk_cap_reject_new_holds_the_cap_and_loses_nothing(hub_factory, module_factory):
    # The cap covers the whole store file, including the index of recently seen ids: keep the
    # messages large next to it so a drained store has room again.
    cap = 1_000_000
    hub = hub_factory(hub_manifest(ALPHA_TO_BETA, hub_ext={"store": {"maxSizeBytes": cap, "fullPolicy": "reject-new"}}))
    alpha = module_factory(hub, "alpha", max_outbox=20_000)
    alpha.connect()
    body = {"pad": "x" * 600}
    sent = [alpha.send("out", body) for _ in range(3_000)]  # ~2 MB: more than the cap; beta is offline
    wait_for(lambda: alpha.pending > 0 and hub.store.depth("module:beta/in") > 0, what="the store filling up")
    time.sleep(2.0)
    assert alpha.pending > 0  # the rest wait in the sender's outbox, unreceipted
    assert hub.store.used_bytes() <= cap * 1.05
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    alpha.flush(timeout=180)
    wait_for(lambda: got.count() >= len(sent), timeout=180, what="everything at beta once the store drained")
    assert sorted(got.ids) == sorted(sent)


def test_disk_cap_drop_oldest_keeps_the_newest_and_counts_drops(hub_factory, module_factory):
    cap = 400_000
    hub = hub_factory(
        hub_manifest(ALPHA_TO_BETA, hub_ext={"store": {"maxSizeBytes": cap, "fullPolicy": "drop-oldest"}})
    )
    alpha = module_factory(hub, "alpha", max_outbox=20_000)
    alpha.connect()
    sent = [alpha.send("out", {"pad": "x" * 400}) for _ in range(3_000)]
    alpha.flush(timeout=120)  # every message receipted: stored, some later dropped to make room
    assert hub.store.used_bytes() <= cap * 1.05
    kept = hub.store.depth("module:beta/in")
    assert 0 < kept < len(sent)
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    wait_for(lambda: got.count() >= kept, timeout=120, what="the kept messages at beta")
    assert got.ids == sent[-len(got.ids) :]  # the newest survived, in order
    metrics = {m.name: m for m in hub.metrics.registry.collect()}
    dropped = sum(s.value for s in metrics["outpost_hub_dropped"].samples if s.labels.get("reason") == "full")
    assert dropped >= len(sent) - kept


def test_batches_both_ways_and_unreadable_batches_are_dropped_and_counted(hub_factory, module_factory, tmp_path):
    """A burst travels as batch PUBLISHes into and out of the hub; a bad batch never blocks it."""
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from outpost.wire import batch as batches
    from outpost.wire import topics

    hub = hub_factory(hub_manifest(ALPHA_TO_BETA))
    beta = module_factory(hub, "beta")
    got = Counter()
    beta.on_input("in", got)
    beta.connect()
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-alpha", protocol=mqtt.MQTTv5)
    raw.username_pw_set("alpha", module_password(device_key(tmp_path), "alpha"))
    raw.connect("127.0.0.1", hub.settings.port)
    raw.loop_start()
    try:
        batch_topic = topics.batch_outputs(DEVICE, "alpha")
        for payload in (b"OPB1\x00\x00\x00\x05[[]]", b"not a batch", batches.encode([])):
            assert raw.publish(batch_topic, payload, qos=1).wait_for_publish(10) is None
        good = [batches.Framed("out", (("$.mid", f"raw-{n}"),), "application/json", b'{"n":%d}' % n) for n in range(3)]
        raw.publish(batch_topic, batches.encode(good), qos=1).wait_for_publish(10)
        wait_for(lambda: got.count() == 3, what="the three messages of the good batch")
        assert got.ids == ["raw-0", "raw-1", "raw-2"]
        assert hub.ingress is not None
        assert hub.ingress.malformed == 2
        assert hub.metrics.dropped.labels(reason="malformed")._value.get() == 2
    finally:
        raw.loop_stop()
        raw.disconnect()

    alpha = module_factory(hub, "alpha")
    alpha.connect()
    sent = [alpha.send("out", {"n": n}) for n in range(3000)]
    alpha.flush(timeout=60)
    wait_for(lambda: got.count() >= 3003, timeout=60, what="the burst at beta")
    assert got.ids[3:] == sent
    assert alpha.batches_sent > 0
    assert beta.batches_received > 0
