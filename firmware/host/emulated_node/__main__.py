"""``python -m emulated_node``: run one emulated sensor node against an Outpost hub."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from emulated_node.core import ActivationState, CoreError, NodeCore
from emulated_node.node import FACTORY_MODEL, REPO, EmulatedNode, NodeSettings
from emulated_node.runtime import TflmRuntime
from emulated_node.sensor import Recording, Sensor, SensorError, SyntheticMotor

DEFAULT_LIBRARY = REPO / "build" / "firmware-host" / "libnode_host.so"
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def run(
    device_id: Annotated[str, typer.Option(help="The leaf device id (listed in $edgeHub outpost.leafDevices).")],
    state_dir: Annotated[Path, typer.Option(help="The node's flash: model slots, credential.")],
    hub_port: Annotated[int, typer.Option(help="The hub's MQTT port on 127.0.0.1.")] = 1883,
    credential: Annotated[str, typer.Option(envvar="OUTPOST_NODE_CREDENTIAL", help="A provisioned credential.")] = "",
    activation_url: Annotated[str, typer.Option(help="Activation endpoint (fleet or hub).")] = "",
    activation_key: Annotated[str, typer.Option(envvar="OUTPOST_ACTIVATION_KEY", help="Activation key.")] = "",
    fault: Annotated[str, typer.Option(help="Inject a fault: stall, bearing_wear or overheating.")] = "",
    recording: Annotated[Path | None, typer.Option(help="Replay raw windows (JSON lines) instead.")] = None,
    windows_per_second: Annotated[float, typer.Option(help="Window rate.")] = 2.0,
    library: Annotated[Path, typer.Option(help="The compiled core (firmware/host build).")] = DEFAULT_LIBRARY,
    model: Annotated[Path, typer.Option(help="Factory model flashed on first boot.")] = FACTORY_MODEL,
    json_status: Annotated[bool, typer.Option("--json", help="Print the final status as JSON.")] = False,
) -> None:
    """Sample, score with TFLM, drive the valve and send telemetry until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sensor: Sensor = Recording(recording) if recording else SyntheticMotor(windows_per_second=windows_per_second)
        if fault and isinstance(sensor, SyntheticMotor):
            sensor.inject(fault)
        core = NodeCore(library, state_dir, device_id, TflmRuntime())
    except (CoreError, SensorError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    settings = NodeSettings(
        device_id, state_dir, hub_port=hub_port, windows_per_second=windows_per_second, credential=credential,
        activation_url=activation_url, activation_key=activation_key, factory_model=model,
    )  # fmt: skip
    node = EmulatedNode(settings, core, sensor)
    node.boot()
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        # Not stop.set() here: the handler runs on the main thread, which may hold stop's own lock
        # (inside stop.wait) at that moment; setting it from another thread cannot deadlock.
        threading.Thread(target=stop.set, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while node.activate_step() is not ActivationState.ACTIVATED and not stop.wait(0.5):
        typer.echo(f"activation: {node.core.activation_state.name.lower()} {node.core.activation_error()}", err=True)
    if not stop.is_set():
        node.connect()
        node.run(stop)
    status = node.describe()
    node.close()
    if json_status:
        typer.echo(json.dumps(status, indent=2))


if __name__ == "__main__":
    app()
