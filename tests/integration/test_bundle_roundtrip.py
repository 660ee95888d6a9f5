"""A disconnected site's whole round trip on the real Docker engine, hub (Mosquitto in the edge-hub
image) and Kafka: bundle down (signed, the engine lacks the images, no registry is reachable),
apply, the sensor's telemetry queues in the hub (the site has no upstream), bundle up, import into
Kafka, receipt back, store released: every message id counted at the far end."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from integration.conftest_kafka import read_topic
from integration.conftest_mosquitto import free_port, wait_for
from outpost.agent.adapters import make_runtime

REPO = Path(__file__).resolve().parents[2]
OUTPOST = str(Path(sys.executable).parent / "outpost")


def outpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def reference_images(docker_engine: Any) -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "build-images"), "edge-hub", "motor-sensor"],
                          capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
    assert done.returncode == 0, f"scripts/build-images failed:\n{done.stdout}\n{done.stderr}"


def unique(client: docker.DockerClient, tmp: Path, base: str, tag: str) -> None:
    """``base`` plus one layer of its own, so the engine does not have it once the tag is removed."""
    ctx = tmp / f"ctx-{uuid.uuid4().hex[:6]}"
    ctx.mkdir()
    (ctx / "site.txt").write_text(tag + uuid.uuid4().hex)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY site.txt /etc/outpost-site.txt\n")
    client.images.build(path=str(ctx), tag=tag, rm=True)


def site_manifest(hub_image: str, sensor_image: str) -> dict[str, Any]:
    doc = json.loads((REPO / "manifests" / "motor-monitor.json").read_text())
    content = doc["modulesContent"]
    agent = content["$edgeAgent"]["properties.desired"]
    agent["systemModules"]["edgeHub"]["settings"]["image"] = hub_image
    agent["systemModules"]["edgeHub"]["env"]["OUTPOST_HUB_METRICS_PORT"] = {"value": "0"}
    agent["modules"] = {"motor-sensor": agent["modules"]["motor-sensor"]}
    agent["modules"]["motor-sensor"]["settings"]["image"] = sensor_image
    hub = content["$edgeHub"]["properties.desired"]
    hub["routes"] = {"sensorUp": "FROM /messages/modules/motor-sensor/outputs/* INTO $upstream"}
    hub.pop("outpost")  # no upstream: the site is disconnected
    content["motor-sensor"]["properties.desired"]["windowsPerSecond"] = 4
    for name in ("fft-filter", "anomaly-detector", "alert-actuator"):
        content.pop(name)
    return doc


def upstream_ids(store: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT m.id FROM deliveries AS d JOIN messages AS m ON m.rowid = d.message WHERE d.endpoint = 'upstream'"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.timeout(900)  # the first use of scripts/build-images on a fresh machine builds two images
def test_disconnected_site_round_trip(reference_images, docker_engine, kafka, tmp_path):
    uid = uuid.uuid4().hex[:8]
    hub_tag, sensor_tag = f"outpost-test/site-{uid}-hub:1", f"outpost-test/site-{uid}-sensor:1"
    ns = f"site{uid[:6]}"
    site = tmp_path / "site"
    state = ["--state-dir", str(site / "agent")]
    runtime = None
    try:
        unique(docker_engine, tmp_path, "outpost/edge-hub:0.1.0", hub_tag)
        unique(docker_engine, tmp_path, "outpost/motor-sensor:0.1.0", sensor_tag)
        (tmp_path / "site.json").write_text(json.dumps(site_manifest(hub_tag, sensor_tag)))
        assert outpost("keys", "generate", "-o", str(tmp_path / "operator"), cwd=tmp_path).returncode == 0
        bundle = tmp_path / "site.tar"
        made = outpost("bundle", "create", "--manifest", str(tmp_path / "site.json"), "-o", str(bundle),
                       "--sign-key", str(tmp_path / "operator.key"), cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        for tag in (hub_tag, sensor_tag):
            docker_engine.images.remove(tag, force=True)

        # At the site: trust the operator, apply the bundle with no registry.
        assert outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path).returncode == 0
        applied = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, "--device-id", "site-1",
                          "--hub", f"127.0.0.1:{free_port()}", "--json", cwd=site.parent)  # fmt: skip
        runtime = make_runtime("docker", state_dir=site / "agent", namespace=ns, workdir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert json.loads(applied.stdout)["converged"] is True
        store = site / "hub" / "store.db"
        wait_for(lambda: store.exists() and len(upstream_ids(store)) >= 20, timeout=120, what="telemetry queued")

        # Bundle up, import into Kafka, receipt back.
        export = tmp_path / "up.tar"
        done = outpost("bundle", "export-upstream", "-o", str(export), *state, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        exported = json.loads(done.stdout)["messages"]
        assert exported >= 20
        topic = f"site-{uid}"
        far = json.loads((tmp_path / "site.json").read_text())
        far["modulesContent"]["$edgeHub"]["properties.desired"]["outpost"] = {
            "upstream": {"sink": "kafka", "kafka": {"bootstrapServers": kafka, "topic": topic}}
        }
        (tmp_path / "home.json").write_text(json.dumps(far))
        imported = outpost("bundle", "import-upstream", str(export), "--manifest", str(tmp_path / "home.json"),
                           "--ledger", str(tmp_path / "ledger"), "--sign-key", str(tmp_path / "operator.key"),
                           "-r", str(tmp_path / "receipt.json"), "--json", cwd=tmp_path)  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["delivered"] == exported
        receipt = json.loads((tmp_path / "receipt.json").read_text())
        records = read_topic(kafka, topic, exported + 1, timeout=8)
        ids = [dict(r.headers)["$.mid"].decode() for r in records]
        assert len(ids) == exported  # every message once
        assert sorted(ids) == sorted(receipt["messages"])
        sources = {(dict(r.headers)["$.cdid"], dict(r.headers)["$.cmid"]) for r in records}
        assert sources == {(b"site-1", b"motor-sensor")}  # the site's sensor, under the site's device id

        released = outpost("bundle", "receipt", str(tmp_path / "receipt.json"), *state, "--json", cwd=tmp_path)
        assert released.returncode == 0, released.stderr
        assert json.loads(released.stdout)["released"] == exported
        left = set(upstream_ids(store))
        assert not left & set(receipt["messages"])  # exactly the named ones are gone ...
        wait_for(lambda: len(upstream_ids(store)) > len(left), timeout=30, what="new telemetry still queuing")
    finally:
        if runtime is not None:
            for name, module in runtime.observe().modules.items():
                runtime.remove(name, module.id)
        for tag in (hub_tag, sensor_tag):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(tag, force=True)
