"""The hub's composition root: broker, store, ingress, pumps, twins and metrics, wired together.

``HubService.start(document)`` brings everything up for a manifest; ``apply(document)`` changes
routes, modules and twins live (already stored messages stay where they are and are delivered
under the new routes' endpoints if those still exist; endpoints no route uses any more keep
their queue until it drains or expires); ``run`` keeps the hub going and follows a manifest
source. Called by the CLI (``outpost hub run``) and by the integration tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.hub.acl import HUB_USER, identities_for
from outpost.hub.adapters.activation_http import ActivationServer
from outpost.hub.adapters.mosquitto import MosquittoSupervisor, load_hub_password
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.broker import BrokerConfig, TlsListener
from outpost.hub.delivery import ModuleInputSink, Modules
from outpost.hub.endpoint import Endpoint
from outpost.hub.ingress import Ingress
from outpost.hub.metrics import HubMetrics
from outpost.hub.pump import Pump, Purger
from outpost.hub.routing import RouteTable
from outpost.hub.sinks import Sink
from outpost.hub.store import UPSTREAM, FullPolicy
from outpost.hub.twin import Twins
from outpost.hub.upstream import DEFAULT_AZURE_BRIDGE, DEFAULT_MQTT_TOPIC
from outpost.manifest import Manifest, load_manifest
from outpost.manifest.models import UpstreamSettings
from outpost.wire import links, topics
from outpost.wire.credentials import device_key
from outpost.wire.link import Connected, Event, Incoming, Link, LinkFactory, LinkSettings

__all__ = ["STORE_FILE", "HubService", "HubSettings", "open_store", "sink_from_settings"]

log = logging.getLogger("outpost.hub")

STORE_FILE = "store.db"


@dataclass
class HubSettings:
    """Where the hub keeps its files and listens; defaults suit a device."""

    state_dir: Path
    device_id: str
    host: str = "127.0.0.1"
    port: int = 1883
    tls_port: int | None = None
    metrics_port: int = 9600
    key_root: Path | None = None
    receive_maximum: int = 2000
    ack_timeout: float = 5.0
    upstream: Sink | None = None  # overrides the manifest's outpost.upstream (tests, tools)
    link_factory: LinkFactory = links.paho  # the hub's own MQTT connections
    broker_user: str | None = None
    activation_port: int | None = None  # leaf-device activation endpoint (off when None; 0: any free port)
    extra: dict[str, Any] = field(default_factory=dict)


def open_store(state_dir: Path) -> SqliteStore:
    """The message store of the hub whose state dir is ``state_dir`` (for tools such as
    ``outpost hub dead-letters``; SQLite lets them share it with a running hub)."""
    return SqliteStore(state_dir / STORE_FILE)


@dataclass
class _Endpoint:
    pump: Pump
    sink: Sink
    thread: threading.Thread
    stop: threading.Event


class HubService:
    """One device's edge hub. ``start``, then ``apply`` new manifests, then ``stop``."""

    def __init__(self, settings: HubSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = HubMetrics()
        self.modules = Modules()
        self.modules.on_online = self._module_online
        self.endpoints: dict[str, _Endpoint] = {}
        self.table = RouteTable.from_specs({}, default_ttl_secs=7200)
        self.manifest: Manifest | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.RLock()
        self._connected = threading.Event()
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.hub_password = load_hub_password(state)
        self.broker: MosquittoSupervisor | None = None
        self.activation: ActivationServer | None = None  # when settings.activation_port is set
        self.store: SqliteStore | None = None
        self.link: Link | None = None
        self.control: Link | None = None
        self._control_connected = threading.Event()
        self.ingress: Ingress | None = None
        self.purger: Purger | None = None
        self.twins: Twins | None = None
        self._metrics_server: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, document: Mapping[str, Any]) -> None:
        """Validate the manifest (ManifestError leaves nothing started), then bring the hub up."""
        manifest = load_manifest(dict(document))
        hub = manifest.edge_hub
        s = self.settings
        key = device_key(s.key_root or s.state_dir.parent)
        identities = identities_for(
            s.device_id, key, self.hub_password, list(manifest.edge_agent.modules), self._leaves(manifest)
        )
        tls = TlsListener(port=s.tls_port) if s.tls_port else None
        self.broker = MosquittoSupervisor(
            s.state_dir, BrokerConfig(port=s.port, host=s.host, tls=tls, user=s.broker_user), identities
        )
        self.broker.start()
        ext = hub.outpost.store if hub.outpost and hub.outpost.store else None
        limit = (ext.max_size_bytes if ext else None) or (
            hub.store_and_forward_configuration.store_limits.max_size_bytes
            if hub.store_and_forward_configuration.store_limits
            else None
        )
        policy = FullPolicy(ext.full_policy) if ext and ext.full_policy else FullPolicy.DROP_OLDEST
        self.store = SqliteStore(s.state_dir / STORE_FILE, max_bytes=limit, full_policy=policy, clock=self.clock)
        self.metrics.watch_store(self.store, clock=self.clock)
        # Two connections: telemetry (acknowledged only once stored, so its receive window can fill
        # up while the store is full) and control (acks, status, twins, deliveries), which must keep
        # flowing precisely then, or a full store could never drain.
        self.link = self._connection("data", self._on_data_event, s.receive_maximum)
        self.control = self._connection("ctl", self._on_control_event, 1000)
        self.twins = Twins(self.control, s.device_id, s.state_dir)
        self.ingress = Ingress(
            self.store, lambda: self.table, self.link, publisher=self.control, on_stored=self._wake,
            metrics=self.metrics, clock=self.clock,
        )  # fmt: skip
        self.purger = Purger(self.store, clock=self.clock, metrics=self.metrics)
        self._spawn("outpost-ingress", self.ingress.run)
        self._spawn("outpost-purger", self.purger.run)
        self.control.start()
        self.link.start()
        if not (self._connected.wait(15) and self._control_connected.wait(15)):
            raise OSError(
                f"the hub could not connect to its broker on {s.host}:{s.port}; see {self.broker.paths.log_file}"
            )
        self.apply(document, _validated=manifest)
        if s.activation_port is not None:
            self.activation = ActivationServer(s.host, s.activation_port, key=key, leaves=self._current_leaves)
            self.activation.start()
        if s.metrics_port:
            from prometheus_client import start_http_server

            self._metrics_server = start_http_server(s.metrics_port, addr="127.0.0.1", registry=self.metrics.registry)
        log.info("edge hub up: broker %s:%d, %d route(s)", s.host, s.port, len(self.table.routes))

    def _connection(self, role: str, on_event: Callable[[Event], None], receive_maximum: int) -> Link:
        s = self.settings
        return s.link_factory(
            LinkSettings(
                host=s.host,
                port=s.port,
                client_id=f"{HUB_USER}-{role}-{s.device_id}",
                username=HUB_USER,
                password=self.hub_password,
                receive_maximum=receive_maximum,
                max_inflight=receive_maximum,
                session_expiry=14 * 86400,
            ),
            on_event,
        )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _current_leaves(self) -> list[str]:
        manifest = self.manifest
        return self._leaves(manifest) if manifest is not None else []

    @staticmethod
    def _leaves(manifest: Manifest) -> list[str]:
        ext = manifest.edge_hub.outpost
        return list(ext.leaf_devices) if ext and ext.leaf_devices else []

    def apply(self, document: Mapping[str, Any], *, _validated: Manifest | None = None) -> None:
        """Switch to a new manifest live: routes, endpoints, broker identities, twins."""
        manifest = _validated or load_manifest(dict(document))
        table = RouteTable.from_desired(manifest.edge_hub)
        if self.control is None or self.store is None or self.broker is None:
            raise RuntimeError("HubService.apply before start")
        with self._lock:
            if self.manifest is not None:
                s = self.settings
                key = device_key(s.key_root or s.state_dir.parent)
                self.broker.reload(
                    identities_for(
                        s.device_id, key, self.hub_password, list(manifest.edge_agent.modules), self._leaves(manifest)
                    )
                )
            self.table = table
            wanted = set(table.endpoints()) | set(self.store.endpoints())
            upstream = self.settings.upstream or sink_from_settings(
                manifest.edge_hub.outpost.upstream if manifest.edge_hub.outpost else None,
                device_id=self.settings.device_id,
            )
            for endpoint in sorted(wanted):
                if endpoint in self.endpoints:
                    continue
                sink = upstream if endpoint == UPSTREAM else self._module_sink(endpoint)
                if sink is not None:
                    self._start_pump(endpoint, sink)
            self.manifest = manifest
        assert self.twins is not None
        self._publish_twins(manifest)
        for entry in self.endpoints.values():
            entry.pump.wake()

    def _module_sink(self, endpoint: str) -> Sink | None:
        parsed = Endpoint.parse(endpoint)
        if parsed is None or parsed.module is None or parsed.input is None:
            return None
        assert self.control is not None
        return ModuleInputSink(
            self.control, self.modules, device=self.settings.device_id, module=parsed.module, input_name=parsed.input,
            ack_timeout=self.settings.ack_timeout,
        )  # fmt: skip

    def _start_pump(self, endpoint: str, sink: Sink) -> None:
        if self.store is None or self.purger is None:
            raise RuntimeError("HubService pump before start")
        stop = threading.Event()
        pump = Pump(
            self.store, endpoint, sink, clock=self.clock, metrics=self.metrics, on_drained=self.purger.wake,
            batch_size=5000 if endpoint == UPSTREAM else 500,  # an upstream backlog: fewer commits, flushes (bench)
            ack_behind=endpoint == UPSTREAM,  # a backlog's drain is bound by the Python work per record
        )  # fmt: skip
        thread = threading.Thread(target=pump.run, args=(stop,), name=f"outpost-pump-{endpoint}", daemon=True)
        thread.start()
        self.endpoints[endpoint] = _Endpoint(pump=pump, sink=sink, thread=thread, stop=stop)

    def stop(self) -> None:
        self._stop.set()
        if self.activation is not None:
            self.activation.stop()
        for endpoint in self.endpoints.values():
            endpoint.stop.set()
            endpoint.pump.wake()
        if self.purger:
            self.purger.wake()
        for endpoint in self.endpoints.values():
            endpoint.thread.join(timeout=10)
            endpoint.sink.close()
        for thread in self._threads:
            thread.join(timeout=10)
        for link in (self.link, self.control):
            if link is not None:
                link.stop()
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        if self.store:
            self.store.close()
        if self.broker:
            self.broker.stop()

    def run(self, stop: threading.Event, *, source: Callable[[], Mapping[str, Any] | None] | None = None) -> None:
        """Until ``stop``: follow ``source`` (a new valid manifest is applied live; an invalid one
        is logged and ignored), renew certificates, refresh metrics."""
        last = None
        while not stop.wait(2.0):
            document = source() if source else None
            if document is not None and document != last:
                try:
                    self.apply(document)
                    last = document
                except Exception as exc:
                    log.error("new manifest refused; the hub keeps its current routes: %s", exc)
                    last = document
            if self.broker:
                self.broker.renew_certificates()
            for name, endpoint in self.endpoints.items():
                if name == UPSTREAM:
                    self.metrics.set_upstream_connected(endpoint.sink.connected(), self.clock())

    # -- events from the broker link ----------------------------------------------------------

    def _wake(self, endpoints: set[str]) -> None:
        for endpoint in endpoints:
            entry = self.endpoints.get(endpoint)
            if entry is not None:
                entry.pump.wake()

    def _module_online(self, module: str) -> None:
        self._wake({e for e in self.endpoints if (p := Endpoint.parse(e)) is not None and p.module == module})

    def _on_data_event(self, event: Event) -> None:
        """Telemetry, on the data link's network thread: only hand over to ingress, never block."""
        if isinstance(event, Connected):
            if event.ok and self.link is not None:
                d = self.settings.device_id
                self.link.subscribe([topics.all_outputs(d), topics.batch_outputs(d, "+"), topics.all_leaf_events()])
                self._connected.set()
            return
        if not isinstance(event, Incoming):
            return
        assert self.ingress is not None
        self.ingress.offer(event)

    def _on_control_event(self, event: Event) -> None:
        """Acks, status and reported properties, on the control link's network thread."""
        if isinstance(event, Connected):
            if event.ok and self.control is not None:
                d = self.settings.device_id
                self.control.subscribe(
                    [topics.acks(d, "+"), topics.status(d, "+"), topics.reported(d, "+"), topics.all_leaf_reported()]
                )
                self._control_connected.set()
                if self.manifest is not None:  # a restarted broker may have lost the retained twins
                    threading.Thread(target=self._republish_twins, name="outpost-twins", daemon=True).start()
            return
        if not isinstance(event, Incoming) or self.control is None:
            return
        match topics.parse(event.topic):
            case topics.ModuleTopic(device, module, channel) if device == self.settings.device_id:
                if channel is topics.ModuleChannel.ACKS:
                    self.modules.acked(module, event.payload)
                elif channel is topics.ModuleChannel.STATUS:
                    self.modules.set_status(module, event.payload, event.user_properties)
                elif channel is topics.ModuleChannel.REPORTED and self.twins is not None:
                    self.twins.reported(module, event.payload)
            case topics.LeafTopic(leaf, topics.LeafChannel.REPORTED) if self.twins is not None:
                manifest = self.manifest
                if manifest is not None and leaf in self._leaves(manifest):  # the ACL allows no other
                    self.twins.reported(leaf, event.payload, leaf=True)
        self.control.ack(event.token, event.qos)

    def _publish_twins(self, manifest: Manifest) -> None:
        assert self.twins is not None
        self.twins.publish_desired(
            {m: manifest.module_twins.get(m, {}) for m in manifest.edge_agent.modules},
            leaves={leaf: manifest.module_twins.get(leaf, {}) for leaf in self._leaves(manifest)},
        )

    def _republish_twins(self) -> None:
        manifest = self.manifest
        if manifest is not None and self.twins is not None:
            self._publish_twins(manifest)


def sink_from_settings(
    settings: UpstreamSettings | None,
    *,
    device_id: str = "outpost",
    azure_bridge: str = DEFAULT_AZURE_BRIDGE,
) -> Sink | None:
    """The sink the manifest's ``outpost.upstream`` asks for; None for ``none`` or no settings.

    Imports the chosen adapter only (so a hub without Kafka configured never imports kafka).
    Raises ``ValueError`` when the chosen sink's own section is missing or unusable (the manifest
    schema requires it; this guards hand-made settings).
    """
    if settings is None or settings.sink == "none":
        return None
    if settings.sink == "kafka":
        if settings.kafka is None:
            raise ValueError("outpost.upstream.sink is 'kafka' but outpost.upstream.kafka is missing")
        from outpost.hub.adapters.kafka_sink import KafkaSink

        return KafkaSink(
            settings.kafka.bootstrap_servers,
            topic=settings.kafka.topic,
            topic_by_output=settings.kafka.topic_by_output,
        )
    if settings.sink == "mqtt":
        mqtt = settings.mqtt
        if mqtt is None:
            raise ValueError("outpost.upstream.sink is 'mqtt' but outpost.upstream.mqtt is missing")
        from outpost.hub.adapters.mqtt_sink import MqttSink

        tls = bool(mqtt.tls)
        return MqttSink(
            mqtt.host,
            mqtt.port or (8883 if tls else 1883),
            topic=mqtt.topic or DEFAULT_MQTT_TOPIC,
            tls=tls,
            client_id=mqtt.client_id or f"outpost-upstream-{device_id}",
        )
    if settings.azure is None:
        raise ValueError("outpost.upstream.sink is 'azure' but outpost.upstream.azure is missing")
    from outpost.hub.adapters.azure_sink import AzureSink

    return AzureSink(azure_bridge, connection_string_env=settings.azure.connection_string_env)
