"""``outpost fleet serve``: open the database, make the first operator token, serve the API with uvicorn.

The operator token is written once, to ``STATE_DIR/operator-token`` (mode 0600), when this
start created it; stderr says where it is, never what it is. Called by :mod:`outpost.cli.fleet`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from outpost.files import write_atomic
from outpost.fleet.adapters.api import DEFAULT_MAX_BODY, create_app
from outpost.fleet.adapters.console import add_console
from outpost.fleet.adapters.console_store import SqlConsoleStore
from outpost.fleet.adapters.database import SqlStore, redact
from outpost.fleet.adapters.device_keys import SqlDeviceKeyStore
from outpost.fleet.adapters.import_api import add_import_routes
from outpost.fleet.adapters.rollout_api import DEFAULT_MAX_MODEL, add_rollout_routes
from outpost.fleet.adapters.rollouts import SqlRolloutStore
from outpost.fleet.console.session import IDLE_SECONDS, SESSION_SECONDS
from outpost.fleet.imports import UpstreamImports
from outpost.fleet.metrics import FleetMetrics
from outpost.fleet.rollout.access import ModelAccess
from outpost.fleet.rollout.driver import RolloutDriver
from outpost.fleet.rollout.metrics import RolloutMetrics
from outpost.fleet.series import Recorder
from outpost.fleet.service import FleetService

__all__ = ["ServeSettings", "default_db_url", "open_service", "serve"]

TOKEN_FILE = "operator-token"
_SETTINGS_ENV = "OUTPOST_FLEET_WORKER_SETTINGS"
GC_THRESHOLDS = (50_000, 20, 100)
"""With 10,000 held connections a full collection walks millions of objects and stops every request
for 0.4-0.8 s (``outpost_fleet_gc_pause_seconds``); these thresholds make collections rarer (the
young generation is collected after 50,000 net allocations instead of 700, the oldest after 100
middle collections instead of 10, and still only when it grew by a quarter)."""


def _tune_gc() -> None:
    gc.freeze()  # what start-up made lives as long as the process: full collections need not walk it
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class ServeSettings:
    state_dir: Path
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 9700
    certfile: Path | None = None
    keyfile: Path | None = None
    max_body: int = DEFAULT_MAX_BODY
    log_level: str = "warning"
    rollout_interval: float = 2.0
    session_max_age: float = SESSION_SECONDS
    session_idle: float = IDLE_SECONDS
    max_model: int = DEFAULT_MAX_MODEL
    workers: int = 1


def default_db_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'fleet.db'}"


def open_service(settings: ServeSettings) -> FleetService:
    """Open (and migrate) the database and make sure an operator exists."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = settings.db_url or default_db_url(settings.state_dir)
    service = FleetService(SqlStore.open(url))
    credential = service.ensure_operator()
    token_path = settings.state_dir / TOKEN_FILE
    if credential is not None:
        write_atomic(token_path, str(credential) + "\n", 0o600)
        print(f"fleet: created the operator token in {token_path} (mode 0600); use it with --token "
              f"or OUTPOST_FLEET_TOKEN", file=sys.stderr)  # fmt: skip
    elif token_path.exists():
        print(f"fleet: operator token in {token_path}", file=sys.stderr)
    else:
        print("fleet: the database has an operator already (made by another instance); use its token",
              file=sys.stderr)  # fmt: skip
    print(f"fleet: database {redact(url)}", file=sys.stderr)
    return service


def _app(service: FleetService, settings: ServeSettings) -> tuple[FastAPI, threading.Event]:
    """The API, console and rollout routes, and the rollout driver's thread (its stop event)."""
    metrics = FleetMetrics()
    app = create_app(service, metrics=metrics, max_body=settings.max_body)
    scheme = "https" if settings.certfile else "http"
    # devices fetch models at this URL; behind a load balancer or on 0.0.0.0 say where they reach it
    models_url = os.environ.get("OUTPOST_FLEET_PUBLIC_URL") or f"{scheme}://{settings.host}:{settings.port}"
    driver, stop = _drive_rollouts(service, app, models_url, settings, metrics)
    assert isinstance(service.store, SqlStore)  # _drive_rollouts refuses anything else
    console_store = SqlConsoleStore(service.store.engine)
    recorder = Recorder(console_store)
    service.on_report = recorder.record  # the report path only buffers; this thread writes
    threading.Thread(target=recorder.run, args=(stop,), name="metric-series", daemon=True).start()
    add_console(app, service, sessions=console_store, series=console_store, index=console_store, rollouts=driver,
                secure=settings.certfile is not None, max_age=settings.session_max_age,
                idle=settings.session_idle)  # fmt: skip
    add_import_routes(app, UpstreamImports(service, SqlDeviceKeyStore(service.store.engine)))
    return app, stop


def worker_app() -> FastAPI:
    """One worker process of ``serve --workers N`` (uvicorn's factory): settings from the parent's environment."""
    raw = json.loads(os.environ[_SETTINGS_ENV])
    settings = ServeSettings(**{**raw, "state_dir": Path(raw["state_dir"]),
                                "certfile": Path(raw["certfile"]) if raw["certfile"] else None,
                                "keyfile": Path(raw["keyfile"]) if raw["keyfile"] else None})  # fmt: skip
    url = settings.db_url or default_db_url(settings.state_dir)
    app, _stop = _app(FleetService(SqlStore.open(url)), settings)  # the driver's daemon thread ends with the worker
    _tune_gc()
    return app


def serve(settings: ServeSettings) -> None:
    """Serve until interrupted: one process, or ``settings.workers`` processes on one listening socket."""
    service = open_service(settings)
    scheme = "https" if settings.certfile else "http"
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "ssl_certfile": str(settings.certfile) if settings.certfile else None,
        "ssl_keyfile": str(settings.keyfile) if settings.keyfile else None,
        "access_log": False,
        "timeout_keep_alive": 75,
        "backlog": 16384,
        "limit_concurrency": None,
    }
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    print(f"fleet: serving {scheme}://{settings.host}:{settings.port} (console at /, OpenAPI at /openapi.json"
          f"{f', {settings.workers} worker processes' if settings.workers > 1 else ''})", file=sys.stderr)  # fmt: skip
    if settings.workers > 1:
        # stateless over the database, so workers are instances sharing one socket (the migration ran above)
        service.store.close()
        os.environ[_SETTINGS_ENV] = json.dumps({**asdict(settings), "state_dir": str(settings.state_dir),
                                                "certfile": str(settings.certfile or ""),
                                                "keyfile": str(settings.keyfile or "")})  # fmt: skip
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers, **common)
        return
    app, stop = _app(service, settings)
    _tune_gc()
    try:
        uvicorn.Server(uvicorn.Config(app, **common)).run()
    finally:
        stop.set()
        service.store.close()


def _drive_rollouts(
    service: FleetService, app: FastAPI, url: str, settings: ServeSettings, metrics: FleetMetrics
) -> tuple[RolloutDriver, threading.Event]:
    """Add the rollout and model routes and run the rollout driver in a thread (one acts per database)."""
    if not isinstance(service.store, SqlStore):
        raise TypeError("rollouts need the SQL store")
    holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    driver = RolloutDriver(service, SqlRolloutStore(service.store.engine), models_url=url, holder=holder)
    driver.on_round = RolloutMetrics(metrics.registry).observe
    access = ModelAccess(service, driver.registry, url)
    service.served = access.stamp
    service.serves_unchanged = access.unchanged
    add_rollout_routes(app, service, driver, access, max_model=settings.max_model)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.rollout_interval):
            driver.tick_safely()

    threading.Thread(target=loop, name="rollout-driver", daemon=True).start()
    return driver, stop
