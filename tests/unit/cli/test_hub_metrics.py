"""The hub panel of ``outpost watch``: parsing the hub's real Prometheus text, rates over scrapes,
failed scrapes, the rendered panel, and the scrape adapter against a local HTTP server."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from outpost.cli.adapters.metrics_scrape import ScrapeError, scrape
from outpost.cli.hub_metrics import HubMetricsView, HubStats, MetricsError, QueueStats, parse
from outpost.cli.watch import render, render_hub
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.metrics import HubMetrics
from outpost.hub.observer import Observer
from outpost.hub.store import Delivery, PutResult, module_endpoint
from outpost.wire.message import Message

URL = "http://127.0.0.1:9600/metrics"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def text(metrics: HubMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def put(store: SqliteStore, endpoint: str, n: int, clock: Clock) -> None:
    for i in range(n):
        message = Message(id=f"{endpoint}-{clock.now}-{i}", body=b"{}", source_device="dev", source_module="m")
        store.put_batch([(message, [Delivery(endpoint, 0, clock.now + 3600)])], clock.now)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", clock=clock)
    yield s
    s.close()


def plain(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# --- parsing the hub's own exposition ------------------------------------------------------------


def test_an_offline_upstream_with_a_queue(store: SqliteStore, clock: Clock):
    metrics = HubMetrics()
    metrics.watch_store(store, clock=clock)
    put(store, "upstream", 3, clock)
    clock.now = 1002.0
    put(store, module_endpoint("beta", "in"), 2, clock)
    metrics.observe_sent("upstream", 5)
    metrics.observe_sent(module_endpoint("beta", "in"), 7)
    metrics.observe_dropped("expired", 2)
    metrics.observe_put(PutResult(dropped=4))
    metrics.set_upstream_connected(False, 990.0)
    clock.now = 1042.0

    stats = parse(text(metrics), url=URL, at=clock.now)

    assert stats.available
    assert stats.error is None
    assert stats.upstream_connected is False
    assert stats.upstream_offline_secs == pytest.approx(52.0)
    assert stats.upstream == QueueStats("upstream", depth=3, oldest_age_secs=pytest.approx(42.0), sent=5)
    assert stats.inputs == (QueueStats("module:beta/in", depth=2, oldest_age_secs=pytest.approx(40.0), sent=7),)
    assert stats.inputs[0].label == "beta/in"
    assert stats.upstream.label == "$upstream"
    assert dict(stats.dropped) == {"expired": 2, "full": 4, "invalid": 0, "malformed": 0}
    assert stats.dropped_total == 6
    assert stats.store_bytes is not None
    assert stats.store_bytes > 0


def test_a_connected_upstream_with_empty_queues(store: SqliteStore, clock: Clock):
    metrics = HubMetrics()
    metrics.watch_store(store, clock=clock)
    metrics.set_upstream_connected(False, 900.0)
    metrics.set_upstream_connected(True, 950.0)
    metrics.observe_sent("upstream", 12)
    stats = parse(text(metrics), url=URL, at=clock.now)
    assert (stats.upstream_connected, stats.upstream_offline_secs) == (True, 0.0)
    assert stats.upstream == QueueStats("upstream", depth=0, oldest_age_secs=None, sent=12)
    assert stats.inputs == ()
    assert stats.dropped_total == 0


def test_a_hub_without_upstream_or_store_says_so():
    stats = parse(text(HubMetrics()), url=URL, at=1.0)  # nothing reported yet: no store, no link
    assert stats.upstream_connected is None
    assert stats.upstream_offline_secs is None
    assert stats.store_bytes is None
    assert stats.upstream.depth == 0


@pytest.mark.parametrize(
    "body",
    [
        "",
        "# HELP python_info x\n# TYPE python_info gauge\npython_info 1.0\n",  # another exporter
        "<html><body>Not Found</body></html>",
        'outpost_hub_queue_depth{endpoint="upstream" 3\n',  # broken labels
        "\x00\xff garbage {{{",
    ],
)
def test_text_that_is_not_the_hubs_metrics_is_refused(body: str):
    with pytest.raises(MetricsError):
        parse(body, url=URL, at=1.0)


# --- rates over successive scrapes -----------------------------------------------------------


def test_send_rates_over_the_window_and_reset_on_hub_restart(clock: Clock):
    metrics = HubMetrics()
    view = HubMetricsView(URL, window=5.0)
    first = view.update(text(metrics), at=100.0)
    assert first.upstream.per_second is None  # one scrape: no rate yet
    for i in range(1, 9):  # 4 msg/s upstream, 1 msg/s to beta, one scrape a second
        metrics.observe_sent("upstream", 4)
        metrics.observe_sent(module_endpoint("beta", "in"), 1)
        stats = view.update(text(metrics), at=100.0 + i)
    assert stats.upstream.sent == 32
    assert stats.upstream.per_second == pytest.approx(4.0)
    assert stats.inputs[0].per_second == pytest.approx(1.0)
    metrics.observe_sent("upstream", 50)  # a burst in the last second shows, averaged over the window
    assert view.update(text(metrics), at=109.0).upstream.per_second == pytest.approx((4 * 4 + 50) / 5)
    restarted = HubMetrics()  # counters back to 0: the rate starts over instead of going negative
    assert view.update(text(restarted), at=110.0).upstream.per_second is None
    restarted.observe_sent("upstream", 6)
    assert view.update(text(restarted), at=112.0).upstream.per_second == pytest.approx(3.0)


def test_a_failed_scrape_is_a_snapshot_that_says_why():
    view = HubMetricsView(URL)
    stats = view.fail("connection refused", at=5.0)
    assert not stats.available
    assert view.latest is stats
    assert stats.as_dict() == {"url": URL, "available": False, "error": "connection refused"}
    assert view.update("not metrics", at=6.0).error is not None
    with pytest.raises(ValueError, match="positive"):
        HubMetricsView(URL, window=0)


def test_snapshot_as_json(store: SqliteStore, clock: Clock):
    metrics = HubMetrics()
    metrics.watch_store(store, clock=clock)
    put(store, "upstream", 2, clock)
    metrics.set_upstream_connected(False, clock.now)
    view = HubMetricsView(URL)
    view.update(text(metrics), at=clock.now)
    metrics.observe_sent(module_endpoint("beta", "in"), 4)
    clock.now += 2
    doc = view.update(text(metrics), at=clock.now).as_dict()
    json.dumps(doc)
    assert doc["url"] == URL
    assert (doc["available"], doc["error"]) == (True, None)
    assert doc["upstream"] == {
        "connected": False, "offlineSecs": 2.0, "queueDepth": 2, "oldestAgeSecs": 2.0, "sent": 0,
        "sentPerSecond": 0.0,
    }  # fmt: skip
    assert doc["inputs"] == [
        {"endpoint": "module:beta/in", "depth": 0, "oldestAgeSecs": None, "sent": 4, "perSecond": 2.0}
    ]
    assert doc["dropped"] == {"expired": 0, "full": 0, "invalid": 0, "malformed": 0}
    assert doc["rejected"] == 0
    assert doc["storeBytes"] > 0


# --- the rendered panel ------------------------------------------------------------------------


def test_panel_of_an_offline_upstream():
    stats = HubStats(
        url=URL, at=1.0, upstream_connected=False, upstream_offline_secs=125.0,
        upstream=QueueStats("upstream", 1234, 118.5, 10, 0.0), dropped=(("expired", 3), ("full", 0)),
        store_bytes=3 * 1024 * 1024, inputs=(QueueStats("module:anomaly-detector/features", 0, None, 99, 2.0),),
    )  # fmt: skip
    shown = plain(render_hub(stats))
    assert "offline for 2m05s" in shown
    assert "$upstream" in shown
    assert "1234" in shown
    assert "1m58s" in shown
    assert "anomaly-detector/features" in shown
    assert "99" in shown
    assert "2.0" in shown
    assert "dropped: expired 3" in shown
    assert "full" not in shown.split("dropped:")[1].split("|")[0]
    assert "store 3.0 MiB" in shown


def test_panel_of_a_connected_upstream_and_of_an_unknown_link():
    up = HubStats(url=URL, at=1.0, upstream_connected=True, upstream_offline_secs=0.0, store_bytes=4096)
    shown = plain(render_hub(up))
    assert "hub: upstream connected" in shown
    assert "dropped: none" in shown
    assert "store 4.0 KiB" in shown
    assert "no link reported" in plain(render_hub(HubStats(url=URL, at=1.0)))


def test_the_view_keeps_working_without_hub_metrics():
    snap = Observer("dev1").snapshot()
    down = HubStats(url=URL, at=1.0, error="connection refused (is the hub running, with this metrics port?)")
    shown = plain(render(snap, [], hub="127.0.0.1:1883", problem=None, hub_stats=down))
    assert f"hub metrics unavailable at {URL}: connection refused" in shown
    assert "messages" in shown
    assert "anomaly score: -" in shown
    assert "alerts: none seen" in shown
    assert "hub metrics" not in plain(render(snap, [], hub="127.0.0.1:1883", problem=None))


# --- the scrape adapter, against a local HTTP server ---------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/metrics", handler
    httpd.shutdown()
    httpd.server_close()


def test_scrape_reads_the_hubs_metrics(server: tuple[str, type[_Handler]]):
    url, handler = server
    metrics = HubMetrics()
    metrics.observe_sent("upstream", 3)
    handler.body = generate_latest(metrics.registry)
    assert parse(scrape(url), url=url, at=1.0).upstream.sent == 3


def test_scrape_errors_say_what_happened(server: tuple[str, type[_Handler]]):
    url, handler = server
    handler.status = 404
    with pytest.raises(ScrapeError, match="HTTP 404"):
        scrape(url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ScrapeError, match="connection refused"):
        scrape(f"http://127.0.0.1:{closed}/metrics")
    with pytest.raises(ScrapeError, match="not an http"):
        scrape("file:///etc/passwd")


def test_scrape_times_out_on_a_silent_endpoint():
    with socket.socket() as sock:  # listens, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        with pytest.raises(ScrapeError, match=r"no answer within 0\.3 s"):
            scrape(f"http://127.0.0.1:{sock.getsockname()[1]}/metrics", timeout=0.3)
