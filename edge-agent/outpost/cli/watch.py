"""``outpost watch``: a live view of the local device: modules, message rates, score, alerts, valve.

The modules come from the agent's state dir, computed as ``outpost list`` does. The messages are
observed on the device's broker by a subscriber of its own (``outpost.cli.adapters.mqtt_tap``:
the hub user, a separate client id, a clean session that expires on disconnect), so the hub's
persistent session is never touched. What the messages mean is ``outpost.hub.observer``. The hub
panel (upstream link, store-and-forward queues, drops, store size) comes from the hub's Prometheus
endpoint (``outpost.cli.adapters.metrics_scrape``, read by ``outpost.cli.hub_metrics``); when it
cannot be read, the panel says why and the rest of the view carries on.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from outpost.agent.environment import HubAddress, default_device_id
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.service import attach
from outpost.agent.state import RuntimeRecord, StateDir
from outpost.cli.adapters.metrics_scrape import ScrapeError, scrape
from outpost.cli.adapters.mqtt_tap import MqttTap, TapError
from outpost.cli.agent import StateOpt, default_state_dir
from outpost.cli.device import _COLOURS, _live_status
from outpost.cli.hub import _default_state_dir as default_hub_state_dir
from outpost.cli.hub_metrics import DEFAULT_URL, HubMetricsView, HubStats
from outpost.cli.output import err, out, print_json
from outpost.errors import OutpostError
from outpost.hub.acl import HUB_USER
from outpost.hub.observer import Observer, Snapshot, subscriptions

REFRESH_SECS = 0.5
MODULES_EVERY_SECS = 2.0  # runtime.observe() may ask Docker: not twice a second
METRICS_EVERY_SECS = 2.0  # the hub's gauges query its store: not twice a second either
SCRAPE_TIMEOUT_SECS = 1.0
WINDOW_SECS = 5.0
PASSWORD_FILE = "hub.password"  # outpost.hub.adapters.mosquitto.load_hub_password's file


class _Agent:
    """The agent's view of the modules, or why there is none (then only messages are shown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.record: RuntimeRecord | None = None
        self.problem: str | None = None
        self._state: StateDir | None = None
        self._runtime: ContainerRuntime | None = None
        try:
            attached = attach(path)
        except OutpostError as exc:
            self.record = StateDir(path).runtime_record()
            self.problem = f"cannot read the modules: {exc}"
            return
        if attached is None:
            self.problem = f"no agent state in {path}: run `outpost agent apply MANIFEST` first, or pass --state-dir"
            return
        self._state, self._runtime, self.record = attached

    def modules(self) -> list[dict[str, Any]]:
        if self._state is None or self._runtime is None:
            return []
        try:
            status = _live_status(self._state, self._runtime)
        except (OutpostError, OSError) as exc:
            self.problem = f"cannot read the modules: {exc}"
            return []
        self.problem = None
        merged = {**status.get("systemModules", {}), **status.get("modules", {})}
        return [
            {
                "name": name,
                "runtimeStatus": module.get("runtimeStatus", "unknown"),
                "restartCount": module.get("restartCount", 0),
                "statusDescription": module.get("statusDescription", ""),
            }
            for name, module in merged.items()
        ]


def _hub_address(option: str | None, port: int | None, record: RuntimeRecord | None) -> tuple[str, int]:
    text = option or str(record.hub if record else HubAddress())
    host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit():
        err.print(f"[red]error:[/] --hub expects HOST:PORT, got {escape(text)!r}")
        raise typer.Exit(2)
    return host, port if port is not None else int(port_text)


def _hub_password(hub_state: Path) -> str:
    path = hub_state / PASSWORD_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        err.print(
            f"[red]error:[/] no hub password in {escape(str(path))}: pass the running hub's state dir with "
            "--hub-state-dir (its `outpost hub run --state-dir`, or $OUTPOST_HUB_STATE_DIR)"
        )
    except PermissionError:
        err.print(
            f"[red]error:[/] cannot read {escape(str(path))} (permission denied): run as the hub's user, e.g. with sudo"
        )
    raise typer.Exit(1)


def _clock(at: float) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def _ago(at: float, now: float) -> str:
    return f"{max(0.0, now - at):.1f}s ago"


def _duration(secs: float) -> str:
    if secs < 60:
        return f"{secs:.1f}s" if secs < 10 else f"{secs:.0f}s"
    if secs < 3600:
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"
    return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_hub(stats: HubStats) -> RenderableType:
    """The hub panel: upstream link, queues (upstream first, then module inputs), drops, store size."""
    if stats.error is not None:
        return Text.from_markup(f"[yellow]hub metrics unavailable at {escape(stats.url)}:[/] {escape(stats.error)}")
    if stats.upstream_connected is None:
        link = "[dim]no link reported (no $upstream route, or the hub just started)[/]"
    elif stats.upstream_connected:
        link = "[green]connected[/]"
    else:
        offline = stats.upstream_offline_secs
        link = f"[bold red]offline{f' for {_duration(offline)}' if offline is not None else ''}[/]"
        if stats.upstream.depth:
            link += " [yellow](stored, forwarded when it is back)[/]"
    drops = ", ".join(f"{reason} {n}" for reason, n in stats.dropped if n) or "none"
    if stats.rejected:
        drops += f"; rejected {stats.rejected} (store full)"
    store = _size(stats.store_bytes) if stats.store_bytes is not None else "-"
    head = Text.from_markup(
        f"hub: upstream {link}  [dim]|[/] dropped: {'[red]' if stats.dropped_total else ''}{escape(drops)}"
        f"{'[/]' if stats.dropped_total else ''}  [dim]|[/] store {store}"
    )
    queues = Table(title="hub store-and-forward", title_justify="left")
    queues.add_column("QUEUE")
    for column in ("QUEUED", "OLDEST", "SENT", "SENT/S"):
        queues.add_column(column, justify="right")
    for i, q in enumerate((stats.upstream, *stats.inputs)):
        if i == 1:
            queues.add_section()
        depth = f"[yellow]{q.depth}[/]" if q.depth else "0"
        queues.add_row(
            escape(q.label),
            depth,
            "-" if q.oldest_age_secs is None else _duration(q.oldest_age_secs),
            str(q.sent),
            "-" if q.per_second is None else f"{q.per_second:.1f}",
        )
    return Group(head, queues)


def render(
    snap: Snapshot,
    modules: list[dict[str, Any]],
    *,
    hub: str,
    problem: str | None,
    connected: bool = True,
    hub_stats: HubStats | None = None,
) -> RenderableType:
    """The whole screen: one renderable, used by the live view and by ``--once``."""
    parts: list[RenderableType] = []
    link = "[green]connected[/]" if connected else "[red]disconnected, reconnecting[/]"
    parts.append(
        Text.from_markup(
            f"[bold]device {escape(snap.device_id)}[/]  hub {escape(hub)} {link}  "
            f"observed {snap.observed_secs:.1f}s, rates over {snap.window:g}s"
        )
    )
    if modules:
        table = Table(title="modules", title_justify="left")
        for column in ("MODULE", "STATUS", "RESTARTS", "DESCRIPTION"):
            table.add_column(column)
        for m in modules:
            colour = _COLOURS.get(str(m["runtimeStatus"]), "white")
            table.add_row(
                escape(m["name"]),
                f"[{colour}]{escape(str(m['runtimeStatus']))}[/]",
                str(m["restartCount"]),
                escape(str(m["statusDescription"])),
            )
        parts.append(table)
    if problem:
        parts.append(Text.from_markup(f"[yellow]modules:[/] {escape(problem)}"))
    rates = Table(title="messages", title_justify="left")
    rates.add_column("SOURCE")
    for column in ("MSG/S", "TOTAL", "LAST"):
        rates.add_column(column, justify="right")
    for s in snap.sources:
        rates.add_row(escape(s.source), f"{s.per_second:.1f}", str(s.total), _ago(s.last_at, snap.now))
    rates.add_section()
    dups = f" ({snap.duplicates} re-sent)" if snap.duplicates else ""
    rates.add_row("[bold]total[/]", f"[bold]{snap.per_second:.1f}[/]", f"[bold]{snap.total}[/]{dups}", "")
    parts.append(rates)
    if hub_stats is not None:
        parts.append(render_hub(hub_stats))
    if snap.score is None:
        parts.append(Text("anomaly score: - (no score seen yet)"))
    else:
        sc = snap.score
        hot = sc.alert is True or (sc.threshold is not None and sc.value > sc.threshold)
        limit = f" (threshold {sc.threshold:g})" if sc.threshold is not None else ""
        parts.append(
            Text.from_markup(
                f"anomaly score: [{'bold red' if hot else 'green'}]{sc.value:.4f}[/]{limit}  "
                f"from {escape(sc.source)}, {_ago(sc.at, snap.now)}"
            )
        )
    if snap.valve is None:
        parts.append(Text("valve: - (no state seen yet)"))
    else:
        v = snap.valve
        colour = "bold yellow" if v.open else "green"
        extra = ", ".join(escape(x) for x in (v.reason, v.mode) if x)
        parts.append(
            Text.from_markup(
                f"valve: [{colour}]{escape(v.state)}[/]{f' ({extra})' if extra else ''}  "
                f"from {escape(v.source)}, {_ago(v.at, snap.now)}"
            )
        )
    if snap.alerts:
        alerts = Table(title="last alerts", title_justify="left")
        for column in ("TIME", "SOURCE", "SCORE", "FAULT", "DEVICE"):
            alerts.add_column(column)
        for a in snap.alerts:
            alerts.add_row(
                _clock(a.at),
                escape(a.source),
                "-" if a.score is None else f"{a.score:.4f}",
                escape(a.fault or "-"),
                escape(a.device or "-"),
            )
        parts.append(alerts)
    else:
        parts.append(Text("alerts: none seen"))
    return Group(*parts)


Inbox = queue.SimpleQueue[tuple[float, str, bytes, tuple[tuple[str, str], ...]]]


def _open_tap(host: str, port: int, password: str, device: str, inbox: Inbox) -> MqttTap:
    """Subscribed to the device's messages, or a message saying what to check and exit 1."""
    tap = MqttTap(
        host,
        port,
        client_id=f"{HUB_USER}-watch-{os.getpid()}-{secrets.token_hex(3)}",
        username=HUB_USER,
        password=password,
        topics=subscriptions(device),
        on_message=lambda topic, payload, props: inbox.put((time.time(), topic, payload, props)),
    )
    try:
        tap.start()
    except TapError as exc:
        if exc.unreachable:
            hint = f"is the hub running? Check with `outpost check --broker {host}:{port}` and `outpost list`"
        elif exc.refused:
            hint = f"is --hub-state-dir the state dir of the hub serving {host}:{port}?"
        else:
            hint = "see `outpost check`"
        err.print(f"[red]error:[/] hub broker {escape(f'{host}:{port}')}: {escape(str(exc))}; {escape(hint)}")
        raise typer.Exit(1) from exc
    return tap


def _drain(inbox: Inbox, observer: Observer) -> None:
    while True:
        try:
            at, topic, payload, props = inbox.get_nowait()
        except queue.Empty:
            return
        observer.observe(topic, payload, props, at=at)


def _scrape(metrics: HubMetricsView) -> HubStats:
    """One scrape of the hub's metrics; a failure is recorded in the snapshot, never raised."""
    try:
        text = scrape(metrics.url, timeout=SCRAPE_TIMEOUT_SECS)
    except ScrapeError as exc:
        return metrics.fail(str(exc), time.time())
    return metrics.update(text, time.time())


def _live(tap: MqttTap, inbox: Inbox, observer: Observer, agent: _Agent, address: str, metrics: HubMetricsView) -> None:
    """Redraw every REFRESH_SECS until Ctrl-C."""
    modules = agent.modules()
    modules_at = time.monotonic()
    stats = _scrape(metrics)
    stats_at = time.monotonic()
    try:
        with Live(console=out, auto_refresh=False) as live:
            while True:
                _drain(inbox, observer)
                if time.monotonic() - modules_at >= MODULES_EVERY_SECS:
                    modules, modules_at = agent.modules(), time.monotonic()
                if time.monotonic() - stats_at >= METRICS_EVERY_SECS:
                    stats, stats_at = _scrape(metrics), time.monotonic()
                snap = observer.snapshot()
                live.update(
                    render(snap, modules, hub=address, problem=agent.problem, connected=tap.connected, hub_stats=stats)
                )
                live.refresh()
                time.sleep(REFRESH_SECS)
    except KeyboardInterrupt:
        return


def watch(
    state_dir: StateOpt = None,
    hub_state_dir: Annotated[
        Path | None,
        typer.Option(
            "--hub-state-dir",
            help="The hub's state dir, for its broker password [default: as `outpost hub run`].",
        ),
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option("--hub", help="The device's broker, HOST:PORT [default: the agent's, else 127.0.0.1:1883]."),
    ] = None,
    hub_port: Annotated[
        int | None, typer.Option("--hub-port", min=1, max=65535, help="Only change the broker's port.")
    ] = None,
    hub_metrics: Annotated[
        str,
        typer.Option(
            "--hub-metrics",
            metavar="URL",
            help="The hub's Prometheus endpoint, for the upstream link, queues, drops and store size "
            "(its OUTPOST_HUB_METRICS_PORT).",
        ),
    ] = DEFAULT_URL,
    device_id: Annotated[
        str | None,
        typer.Option(
            "--device-id", envvar="OUTPOST_DEVICE_ID", help="Device id [default: the agent's, else hostname]."
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Observe --seconds, print one snapshot and exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --once: print the snapshot as JSON.")] = False,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.0, help="With --once: how long to observe before the snapshot.")
    ] = 2.0,
) -> None:
    """Watch the device live: modules, message rates per output, the hub's upstream link and queues,
    anomaly score, alerts, valve (Ctrl-C ends).

    Messages are observed on the device's broker as the hub user, with a session of its own that
    leaves nothing behind: the hub and the modules are not disturbed. The hub panel is read from
    the hub's metrics endpoint (--hub-metrics); when that cannot be read, the panel says why.
    """
    if json_out and not once:
        err.print("[red]error:[/] --json needs --once (the live view is for people)")
        raise typer.Exit(2)
    agent = _Agent(state_dir or default_state_dir())
    host, port = _hub_address(hub, hub_port, agent.record)
    address = f"{host}:{port}"
    device = device_id or (agent.record.device if agent.record else default_device_id())
    password = _hub_password(hub_state_dir or default_hub_state_dir())
    observer = Observer(device, window=WINDOW_SECS)
    inbox: Inbox = queue.SimpleQueue()
    metrics = HubMetricsView(hub_metrics, window=WINDOW_SECS)
    with _open_tap(host, port, password, device, inbox) as tap:
        observer.restart()  # rates count from the moment the subscription is in place
        if not once:
            _live(tap, inbox, observer, agent, address, metrics)
            return
        err.print(f"watching {escape(device)} on {escape(address)} for {seconds:g} s")
        started = time.monotonic()
        _scrape(metrics)  # the first of two: the send rates are over the observation
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        _drain(inbox, observer)
        snap = observer.snapshot()
        stats = _scrape(metrics)
        modules = agent.modules()
        if json_out:
            doc = {"hub": address, "agent": {"stateDir": str(agent.path), "problem": agent.problem}, "modules": modules}
            print_json({**doc, **snap.as_dict(), "hubMetrics": stats.as_dict()})
        else:
            out.print(
                render(snap, modules, hub=address, problem=agent.problem, connected=tap.connected, hub_stats=stats)
            )
