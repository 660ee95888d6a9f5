"""The hub's Mosquitto (2.0.11) for real: credentials, ACLs, limits, supervision, TLS and renewal.

What Mosquitto 2.0.11 does with a refusal, as pinned here:

- a PUBLISH (QoS 1) outside the user's ACL is answered with PUBACK reason code 0x87 (Not
  authorized) and not forwarded to anyone;
- a SUBSCRIBE outside the ACL is GRANTED (SUBACK 0x01): the ACL is applied per message at
  delivery, so the subscriber simply never receives anything it may not read;
- a CONNECT with a wrong password, an unknown user or no credentials gets CONNACK 0x87.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time

import pytest
from cryptography import x509

from integration.conftest_mosquitto import DEVICE, HUB_USER, Broker, free_port, wait_for
from outpost.hub.acl import identities_for
from outpost.hub.adapters.mosquitto import MosquittoSupervisor
from outpost.hub.broker import BrokerConfig, BrokerError
from outpost.wire import topics

GRANTED_QOS1 = 0x01
NOT_AUTHORIZED = 0x87
OK = 0x00
NO_SUBSCRIBERS = 0x10  # PUBACK "No matching subscribers": accepted, nobody listening


def mod(module: str, rest: str) -> str:
    return f"devices/{DEVICE}/modules/{module}/{rest}"


def test_module_uses_its_own_topics(broker: Broker) -> None:
    hub = broker.raw(HUB_USER)
    assert hub.wait_connack() == OK
    assert hub.subscribe(f"devices/{DEVICE}/#") == [GRANTED_QOS1]
    alpha = broker.raw("alpha")
    assert alpha.wait_connack() == OK
    for sub in ("inputs/#", "twin/desired/#", "methods/#", "receipts"):
        assert alpha.subscribe(mod("alpha", sub)) == [GRANTED_QOS1]

    writes = [
        mod("alpha", "outputs/temperature"),
        mod("alpha", "twin/reported"),
        mod("alpha", "acks"),
        mod("alpha", "status"),
        topics.method_response_prefix(DEVICE, "alpha") + "/caller/1234",
    ]
    for topic in writes:
        assert alpha.publish(topic, b"x") == OK, topic
    wait_for(lambda: {m.topic for m in hub.received()} >= set(writes), what="the hub to get alpha's publishes")

    reads = [
        mod("alpha", "inputs/in1"),
        mod("alpha", "twin/desired"),
        mod("alpha", "methods/reset"),
        mod("alpha", "receipts"),
    ]
    for topic in reads:
        assert hub.publish(topic, b"y") == OK
    wait_for(lambda: [m.topic for m in alpha.received()] == reads, what="alpha to read its own topics")


def test_broker_refuses_other_modules_topics(broker: Broker) -> None:
    hub = broker.raw(HUB_USER)
    hub.subscribe(f"devices/{DEVICE}/#")
    alpha = broker.raw("alpha")
    assert alpha.wait_connack() == OK

    # Publishing outside its ACL: PUBACK 0x87 and nobody receives it.
    refused = [
        mod("beta", "outputs/temperature"),
        mod("beta", "inputs/in1"),
        mod("alpha", "inputs/in1"),  # its own inputs are written by the hub only
        mod("alpha", "receipts"),
        mod("alpha", "twin/desired"),
        mod("beta", "twin/reported"),
        mod("beta", "status"),
        mod("beta", "methods/reset"),
        topics.method_response_prefix(DEVICE, "beta") + "/x/1",
        f"devices/{DEVICE}/messages/events/",
        "elsewhere",
    ]
    for topic in refused:
        assert alpha.publish(topic, b"x") == NOT_AUTHORIZED, topic
    allowed = mod("alpha", "outputs/sentinel")  # delivered in order: once it is in, nothing refused came
    assert alpha.publish(allowed, b"s") == OK
    wait_for(lambda: hub.received(allowed), what="alpha's sentinel")
    assert [m.topic for m in hub.received()] == [allowed]

    # Subscribing to another module's topics (or to everything) is granted by Mosquitto 2.0.11 ...
    for sub in ("inputs/#", "twin/desired/#", "methods/#", "receipts"):
        assert alpha.subscribe(mod("beta", sub)) == [GRANTED_QOS1]
    assert alpha.subscribe("#") == [GRANTED_QOS1]
    # ... but nothing it may not read is delivered. The hub writes beta's topics, then a sentinel
    # on alpha's own input; the broker delivers in order, so once the sentinel is in, nothing else came.
    for topic in (
        mod("beta", "inputs/in1"),
        mod("beta", "twin/desired"),
        mod("beta", "methods/m"),
        mod("beta", "receipts"),
    ):
        assert hub.publish(topic, b"secret") == OK
    sentinel = mod("alpha", "inputs/sentinel")
    assert hub.publish(sentinel, b"s") == OK
    wait_for(lambda: alpha.received(sentinel), what="the sentinel")
    assert {m.topic for m in alpha.received()} == {sentinel}


@pytest.mark.parametrize(
    ("user", "password"),
    [("alpha", "wrong"), ("nobody", "whatever"), (None, None), (HUB_USER, "wrong")],
    ids=["wrong-password", "unknown-user", "anonymous", "hub-wrong-password"],
)
def test_broker_refuses_bad_credentials(broker: Broker, user: str | None, password: str | None) -> None:
    client = broker.raw(user, password if password is not None else "", reconnect=False)
    assert client.wait_connack() == NOT_AUTHORIZED


def test_leaf_device_writes_only_its_events(broker_factory) -> None:
    broker = broker_factory(modules=["alpha"], leaves=["sensor1"])
    leaf = broker.raw("sensor1")
    assert leaf.wait_connack() == OK
    assert leaf.publish("devices/sensor1/messages/events/a=1", b"t") == NO_SUBSCRIBERS
    assert leaf.publish("devices/sensor2/messages/events/", b"t") == NOT_AUTHORIZED
    assert leaf.publish(mod("alpha", "outputs/o"), b"t") == NOT_AUTHORIZED


def test_leaf_devices_twins_and_methods_are_their_own(broker_factory) -> None:
    """A leaf reads its own desired properties and method calls, writes its own reported properties
    and method responses, and nothing of another leaf's or a module's."""
    broker = broker_factory(modules=["alpha"], leaves=["sensor1", "sensor2"])
    hub = broker.raw(HUB_USER)
    one, two = broker.raw("sensor1"), broker.raw("sensor2")
    own = topics.leaf_topic
    desired, reported = topics.LeafChannel.DESIRED, topics.LeafChannel.REPORTED
    assert one.subscribe(f"{own('sensor1', desired)}/#") == [1]
    assert one.subscribe(topics.leaf_method_request("sensor1", "#")) == [1]
    assert two.subscribe(f"{own('sensor1', desired)}/#") == [1]  # granted, but the ACL delivers nothing
    assert two.subscribe(topics.leaf_method_request("sensor1", "#")) == [1]
    assert hub.subscribe(own("+", reported)) == [1]
    assert hub.subscribe(f"devices/{DEVICE}/methodres/#") == [1]

    hub.publish(own("sensor1", desired), b'{"threshold": 0.9}', retain=True)
    hub.publish(topics.leaf_method_request("sensor1", "valve"), b"{}")
    wait_for(lambda: len(one.received("devices/sensor1/")) == 2, what="sensor1's desired and method call")
    assert one.publish(own("sensor1", reported), b"{}") == OK
    assert one.publish(topics.method_response(DEVICE, "sensor1", "caller", "c1"), b"{}") == OK
    wait_for(lambda: len(hub.received()) == 2, what="the hub receiving sensor1's report and response")

    assert two.publish(own("sensor1", reported), b"{}") == NOT_AUTHORIZED  # another leaf's report
    assert two.publish(topics.method_response(DEVICE, "sensor1", "caller", "c2"), b"{}") == NOT_AUTHORIZED
    assert two.publish(own("sensor2", desired), b"{}") == NOT_AUTHORIZED  # only the hub writes desired
    assert one.publish(topics.leaf_method_request("sensor2", "valve"), b"{}") == NOT_AUTHORIZED
    assert one.publish(topics.reported(DEVICE, "alpha"), b"{}") == NOT_AUTHORIZED
    time.sleep(0.5)
    assert two.received() == []  # sensor1's desired and method call never reached sensor2


def _crash_with_will(broker: Broker, user: str, will_topic: str) -> None:
    """A child process connects with a retained will and dies without DISCONNECT."""
    code = textwrap.dedent(
        f"""
        import os, time
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="crasher-{user}", protocol=mqtt.MQTTv5)
        c.username_pw_set({user!r}, {broker.password(user)!r})
        c.will_set({will_topic!r}, b"offline", qos=1, retain=True)
        c.connect("127.0.0.1", {broker.port})
        c.loop_start()
        deadline = time.monotonic() + 10
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if c.is_connected() else 3)
        """
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30, check=False).returncode == 0


def test_will_is_published_only_on_the_modules_own_status(broker: Broker) -> None:
    hub = broker.raw(HUB_USER)
    hub.subscribe(mod("+", "status"))
    _crash_with_will(broker, "beta", mod("alpha", "status"))  # accepted by the broker, will dropped
    _crash_with_will(broker, "alpha", mod("alpha", "status"))
    wait_for(lambda: hub.received(mod("alpha", "status")), what="alpha's will")
    assert [(m.topic, m.payload) for m in hub.received()] == [(mod("alpha", "status"), b"offline")]
    late = broker.raw(HUB_USER)
    late.subscribe(mod("alpha", "status"))
    wait_for(late.received, what="the retained status")
    assert late.received()[0].retain


def test_queue_holds_more_than_mosquittos_default_for_an_offline_session(broker: Broker) -> None:
    """max_queued_messages is raised from 1000: an offline persistent session misses nothing."""
    hub = broker.raw(HUB_USER, client_id="hub-ingress")
    hub.subscribe(mod("alpha", "outputs/#"))
    hub.close()  # offline; its session (session expiry 3600 s) keeps queueing
    alpha = broker.raw("alpha")
    count = 2500
    for i in range(count):
        alpha.client.publish(mod("alpha", "outputs/o"), str(i).encode(), qos=1)
    wait_for(lambda: len(alpha.pubacks) >= count, timeout=60, what="PUBACKs")
    back = broker.raw(HUB_USER, client_id="hub-ingress")
    wait_for(lambda: len(back.received()) >= count, timeout=60, what="the queued messages")
    assert [int(m.payload) for m in back.received()] == list(range(count))


def test_receive_maximum_bounds_unacknowledged_deliveries(broker: Broker) -> None:
    """The hub acks after its commit: the broker sends at most its Receive Maximum unacked."""
    receive_maximum = 50
    hub = broker.raw(HUB_USER, manual_ack=True, receive_maximum=receive_maximum)
    hub.subscribe(mod("alpha", "outputs/#"))
    alpha = broker.raw("alpha")
    for i in range(200):
        alpha.client.publish(mod("alpha", "outputs/o"), str(i).encode(), qos=1)
    wait_for(lambda: len(alpha.pubacks) >= 200, timeout=30, what="PUBACKs")
    wait_for(lambda: len(hub.received()) >= receive_maximum - 1, what="a full window")
    settled = len(hub.received())
    assert settled <= receive_maximum
    acked = 0
    while acked < 200:
        batch = hub.received()[acked:]
        for m in batch:
            hub.client.ack(m.mid, m.qos)
        acked += len(batch)
        if acked < 200:
            wait_for(lambda n=acked: len(hub.received()) > n, what="the next window")
    assert sorted(int(m.payload) for m in hub.received()) == list(range(200))


def test_supervisor_restarts_a_killed_broker(broker: Broker) -> None:
    sup = broker.supervisor
    first = sup.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: sup.restarts == 1 and sup.pid not in (None, first), what="a restart")
    sup.wait_running(timeout=15)
    assert sup.last_exit_code == -signal.SIGKILL
    client = broker.raw("alpha", reconnect=False)
    assert client.wait_connack() == OK


def test_reload_applies_new_modules_without_a_restart(broker: Broker) -> None:
    pid = broker.supervisor.pid
    key = (broker.state_dir / "device.key").read_bytes()
    broker.supervisor.reload(identities_for(DEVICE, key, broker.hub_password, ["alpha", "delta"]))
    broker.identities = broker.supervisor.identities
    delta = broker.raw("delta")
    wait_for(lambda: delta.connacks and delta.connacks[-1] == OK, what="delta to connect")
    assert delta.publish(mod("delta", "outputs/o"), b"x") == NO_SUBSCRIBERS
    assert delta.publish(mod("alpha", "outputs/o"), b"x") == NOT_AUTHORIZED
    removed = broker.raw("beta", password=broker_password_of_removed(key), reconnect=False)
    assert removed.wait_connack() == NOT_AUTHORIZED
    assert broker.supervisor.pid == pid
    assert broker.supervisor.restarts == 0


def broker_password_of_removed(key: bytes) -> str:
    from outpost.wire.credentials import module_password

    return module_password(key, "beta")


def test_missing_binary_and_busy_port_are_clear_errors(broker: Broker, tmp_path) -> None:
    ids = identities_for(DEVICE, b"k" * 32, "pw", ["alpha"])
    missing = MosquittoSupervisor(tmp_path / "a", BrokerConfig(port=free_port()), ids, binary="/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="apt-get install -y mosquitto"):
        missing.start()
    busy = MosquittoSupervisor(tmp_path / "b", BrokerConfig(port=broker.port), ids, start_timeout=10)
    try:
        with pytest.raises(BrokerError, match=f"port {broker.port} on 127.0.0.1 is already in use"):
            busy.start()
        assert busy.pid is None
    finally:
        busy.stop()


# ---------------------------------------------------------------------------------------- TLS


def _served_certificate(port: int) -> x509.Certificate:
    """The certificate the TLS listener presents (read without verifying: it may be future-dated)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_tls_listener_needs_the_device_ca(broker_factory) -> None:
    broker = broker_factory(modules=["alpha"], leaves=["sensor1"], tls=True)
    ca = broker.supervisor.paths.ca_cert
    assert broker.tls_port is not None
    trusted = broker.raw("sensor1", port=broker.tls_port, ca_file=ca)
    assert trusted.connect_error is None
    assert trusted.wait_connack() == OK
    assert trusted.publish("devices/sensor1/messages/events/", b"t") == NO_SUBSCRIBERS

    context = ssl.create_default_context()  # the system CAs only
    with (
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")

    for key in (broker.supervisor.paths.ca_key, broker.supervisor.paths.server_key):
        assert key.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("when", ["past-two-thirds", "before-not-before"])
def test_certificate_renewal_reloads_the_listener(broker_factory, when: str) -> None:
    broker = broker_factory(modules=["alpha"], leaves=["sensor1"], tls=True)
    sup = broker.supervisor
    ca = sup.paths.ca_cert
    before = _served_certificate(broker.tls_port)
    start, end = before.not_valid_before_utc, before.not_valid_after_utc
    assert not sup.renew_certificates(start + (end - start) / 2)
    now = end - (end - start) / 3 + dt.timedelta(hours=1) if when == "past-two-thirds" else start - dt.timedelta(days=2)
    assert sup.renew_certificates(now)
    renewed = x509.load_pem_x509_certificate(sup.paths.server_cert.read_bytes())
    assert renewed.serial_number != before.serial_number
    assert renewed.not_valid_before_utc <= now.replace(tzinfo=dt.UTC) < renewed.not_valid_after_utc
    wait_for(
        lambda: _served_certificate(broker.tls_port).serial_number == renewed.serial_number,
        what="the broker to serve the renewed certificate",
    )
    if when == "before-not-before":  # valid on the real clock too: a verifying client connects
        client = broker.raw("sensor1", port=broker.tls_port, ca_file=ca)
        assert client.wait_connack() == OK
    assert sup.restarts == 0
    assert json.dumps(sorted(p.name for p in sup.paths.tls_dir.iterdir())) == json.dumps(
        ["ca.key", "ca.pem", "server.key", "server.pem"]
    )
