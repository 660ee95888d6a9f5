"""Process runtime: modules as plain processes, for devices without a container engine.

Each module's ``outpost.process.command`` runs under a small ``/bin/sh`` wrapper in its own
session (so a stop signals the whole group) that writes the exit code to a file when the
command ends. Records live in the state dir, so after the agent restarts (even after
``kill -9``) it finds its processes again, by pid *and* kernel start time so a reused pid
is never mistaken for a module. Health probes (``outpost.health``: a command or an HTTP
URL) run on a background thread with Docker's semantics: ``starting`` until the first
success or the start period ends, ``unhealthy`` after ``retries`` consecutive failures.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform as host
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost.agent.observed import Health, ModuleState, Observed, RunState, boot_time
from outpost.agent.runtime import Platform
from outpost.agent.spec import ModuleSpec, RegistryAuth
from outpost.errors import PermanentError, TemporaryError
from outpost.files import write_atomic
from outpost.manifest.models import HealthProbe

__all__ = ["ProcessRuntime"]

# The wrapper records its own pid first (so an agent killed right after fork can still find
# it), runs the command, then records the exit code; both files are written atomically.
_WRAPPER = (
    'pidfile=$1; exitfile=$2; shift 2; echo $$ > "$pidfile.tmp"; mv "$pidfile.tmp" "$pidfile"; '
    'rm -f "$exitfile"; "$@"; code=$?; echo $code > "$exitfile.tmp"; mv "$exitfile.tmp" "$exitfile"; exit $code'
)
#: How long a start may go without the wrapper's pid file before it counts as failed.
_START_GRACE_SECS = 10.0


def _boot_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    state = fields[0] if fields else "X"
    return None if state in ("Z", "X") else fields[19]


@dataclass
class _Probe:
    spec: HealthProbe
    started: float
    next_at: float
    cwd: Path
    env: dict[str, str]
    failures: int = 0
    health: Health = Health.STARTING


class ProcessRuntime:
    """A ``ContainerRuntime`` that runs each module's command as a local process."""

    kind = "process"

    def __init__(self, state_dir: Path, namespace: str = "default", *, workdir: Path | None = None) -> None:
        self.namespace = namespace
        self.dir = state_dir / "processes" / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir or Path.cwd()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._probes: dict[str, _Probe] = {}
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._boot = boot_time()

    # -- records -------------------------------------------------------------------------------

    def _record_path(self, module: str) -> Path:
        return self.dir / f"{module}.json"

    def _read(self, module: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._record_path(module).read_text())
        except (OSError, ValueError):
            return None
        return data

    def _write(self, module: str, record: dict[str, Any]) -> None:
        write_atomic(self._record_path(module), json.dumps(record), 0o600)  # holds the module's password

    def _alive(self, record: dict[str, Any]) -> bool:
        pid = record.get("pid")
        if not pid:
            return False
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:  # reap our own child
            del self._children[pid]
        return _boot_ticks(pid) == record.get("pidStart")

    def _adopt(self, module: str, record: dict[str, Any]) -> dict[str, Any]:
        """Finish a start an agent crash interrupted: adopt the process its wrapper recorded."""
        try:
            pid = int((self.dir / f"{module}.pid").read_text().strip())
        except (OSError, ValueError):
            pid = 0
        ticks = _boot_ticks(pid) if pid else None
        if ticks is not None:
            record |= {"pid": pid, "pidStart": ticks, "state": "running", "startedAt": record.get("startingAt")}
        elif time.time() - float(record.get("startingAt") or 0.0) > _START_GRACE_SECS:
            record |= {"pid": None, "state": "running", "startedAt": record.get("startingAt")}
        else:
            return record  # still starting: neither running nor failed yet
        self._write(module, record)
        return record

    def _settle(self, module: str, record: dict[str, Any]) -> dict[str, Any]:
        """Turn a record whose process ended into an exited one, with the exit code it left."""
        if record["state"] == "starting":
            record = self._adopt(module, record)
        if record["state"] != "running" or self._alive(record):
            return record
        exit_file = self.dir / f"{module}.exit"
        try:
            record["exitCode"] = int(exit_file.read_text().strip())
            record["finishedAt"] = exit_file.stat().st_mtime
        except (OSError, ValueError):
            record["exitCode"] = record.get("signalCode", 137)
            # No exit file: killed, perhaps by a reboot; then it ended before this boot.
            started = float(record.get("startedAt") or 0.0)
            booted = self._boot or 0.0
            record["finishedAt"] = booted - 1.0 if started < booted else time.time()
        record["state"] = "exited"
        record["pid"] = None
        self._write(module, record)
        return record

    # -- reading -------------------------------------------------------------------------------

    def observe(self) -> Observed:
        modules: dict[str, ModuleState] = {}
        for path in sorted(self.dir.glob("*.json")):
            module = path.stem
            record = self._read(module)
            if record is None:
                continue
            record = self._settle(module, record)
            health = self._health(module) if record["state"] == "running" else Health.NONE
            modules[module] = ModuleState(
                name=module,
                id=record["id"],
                image=record["image"],
                image_id=record["configHash"],
                config_hash=record["configHash"],
                deployment_id=record.get("deployment", ""),
                state=RunState.UNKNOWN if record["state"] == "starting" else RunState(record["state"]),
                exit_code=record.get("exitCode"),
                started_at=record.get("startedAt"),
                finished_at=record.get("finishedAt"),
                health=health,
            )
        return Observed(modules=modules, images=frozenset(m.image for m in modules.values()), boot_time=self._boot)

    def _health(self, module: str) -> Health:
        """Live probe state when this process runs the probes, else what the prober last wrote."""
        probe = self._probes.get(module)
        if probe is not None:
            return probe.health
        try:
            return Health((self.dir / f"{module}.health").read_text().strip())
        except (OSError, ValueError):
            return Health.NONE

    def platform(self) -> Platform:
        return {"os": host.system().lower(), "architecture": host.machine(), "version": host.release()}

    def logs(self, module: str, *, tail: int | None = None, follow: bool = False) -> Iterator[str]:
        path = self.dir / f"{module}.log"
        if not path.exists():
            raise PermanentError(f"no logs for module {module}: it was never started", module=module, action="logs")
        with path.open("rb") as handle:
            lines = handle.read().decode("utf-8", "replace").splitlines()
            yield from lines[-tail:] if tail else lines
            while follow:
                chunk = handle.readline()
                if chunk:
                    yield chunk.decode("utf-8", "replace").rstrip("\n")
                else:
                    time.sleep(0.2)

    # -- changing ------------------------------------------------------------------------------

    def pull(self, image: str, auth: RegistryAuth | None) -> None:
        """Nothing to fetch: a process module runs what is installed on the device."""

    def create(self, spec: ModuleSpec, deployment_id: str) -> str:
        if spec.process is None:
            raise PermanentError(
                f"module {spec.name} has no outpost.process.command, so the process runtime cannot run it; "
                "add one to the manifest or use the Docker runtime",
                module=spec.name,
                action="create",
            )
        if self._read(spec.name) is not None:
            raise PermanentError(f"module {spec.name} already exists", module=spec.name, action="create")
        record = {
            "id": f"proc-{uuid.uuid4().hex[:12]}",
            "image": spec.image,
            "configHash": spec.config_hash,
            "deployment": deployment_id,
            "command": spec.process.command,
            "workingDir": spec.process.working_dir,
            "env": {**spec.env, **spec.process.env},
            "health": spec.health.model_dump(mode="json", by_alias=True) if spec.health else None,
            "state": "created",
        }
        self._write(spec.name, record)
        return str(record["id"])

    def start(self, module: str) -> None:
        record = self._read(module)
        if record is None:
            raise PermanentError(f"module {module} was not created", module=module, action="start")
        record = self._settle(module, record)
        if record["state"] == "running":
            return
        workdir = Path(record["workingDir"]) if record.get("workingDir") else self.workdir
        if not workdir.is_absolute():
            workdir = self.workdir / workdir
        pidfile, exitfile = self.dir / f"{module}.pid", self.dir / f"{module}.exit"
        pidfile.unlink(missing_ok=True)
        record |= {"state": "starting", "startingAt": time.time(), "pid": None}
        self._write(module, record)  # a crash from here on is resolved by _adopt
        log = (self.dir / f"{module}.log").open("ab")
        try:
            child = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "outpost-module", str(pidfile), str(exitfile), *record["command"]],
                cwd=workdir,
                env={**os.environ, **record["env"]},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            record["state"] = "created"
            self._write(module, record)
            raise PermanentError(f"cannot start {module} in {workdir}: {exc}", module=module, action="start") from exc
        finally:
            log.close()
        self._children[child.pid] = child
        record |= {
            "pid": child.pid,
            "pidStart": _boot_ticks(child.pid),
            "state": "running",
            "startedAt": record["startingAt"],
            "exitCode": None,
            "finishedAt": None,
            "signalCode": None,
        }
        self._write(module, record)
        if record.get("health"):
            probe = HealthProbe.model_validate(record["health"])
            now = time.monotonic()
            with self._lock:
                self._probes[module] = _Probe(
                    spec=probe,
                    started=now,
                    next_at=now + min(1.0, probe.interval_secs),
                    cwd=workdir,  # a command probe runs where, and with the environment that, the module does
                    env={**os.environ, **record["env"]},
                )
                (self.dir / f"{module}.health").write_text(Health.STARTING.value)
            self._ensure_prober()

    def stop(self, module: str, id: str, timeout: float = 10.0) -> None:  # noqa: ARG002 - the Protocol passes the id; records are keyed by module
        record = self._read(module)
        if record is not None and record["state"] == "starting":
            record = self._adopt(module, record)
        if record is None or record["state"] != "running" or not record.get("pid"):
            return
        pid = int(record["pid"])
        if self._alive(record):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while self._alive(record) and time.monotonic() < end:
                time.sleep(0.05)
            if self._alive(record):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                record["signalCode"] = 137
            else:
                record["signalCode"] = 143
        with self._lock:
            self._probes.pop(module, None)
        self._settle(module, record)

    def remove(self, module: str, id: str) -> None:
        self.stop(module, id)
        for suffix in (".json", ".exit", ".log", ".health", ".pid"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{module}{suffix}").unlink()

    def remove_image(self, image: str) -> bool:  # noqa: ARG002 - Protocol signature
        """Processes have no images."""
        return False

    def restart(self, module: str, timeout: float = 10.0) -> None:
        record = self._read(module)
        if record is None:
            raise TemporaryError(f"module {module} does not exist", module=module, action="restart")
        self.stop(module, record["id"], timeout)
        self.start(module)

    # -- health --------------------------------------------------------------------------------

    def _ensure_prober(self) -> None:
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_forever, name="outpost-probes", daemon=True)
            self._prober.start()

    def _probe_forever(self) -> None:
        while True:
            with self._lock:
                due = [(m, p) for m, p in self._probes.items() if p.next_at <= time.monotonic()]
            for module, probe in due:
                ok = self._check(probe)
                now = time.monotonic()
                with self._lock:
                    before = probe.health
                    probe.next_at = now + probe.spec.interval_secs
                    if ok:
                        probe.failures, probe.health = 0, Health.HEALTHY
                    elif now - probe.started >= probe.spec.start_period_secs:
                        probe.failures += 1
                        if probe.failures >= probe.spec.retries:
                            probe.health = Health.UNHEALTHY
                    if probe.health is not before and self._probes.get(module) is probe:
                        (self.dir / f"{module}.health").write_text(probe.health.value)
            time.sleep(0.1)

    @staticmethod
    def _check(probe: _Probe) -> bool:
        spec = probe.spec
        try:
            if spec.http:
                with urllib.request.urlopen(spec.http, timeout=spec.timeout_secs) as response:
                    return 200 <= int(response.status) < 400
            if spec.command:
                done = subprocess.run(
                    spec.command,
                    cwd=probe.cwd,
                    env=probe.env,
                    capture_output=True,
                    timeout=spec.timeout_secs,
                    check=False,
                )
                return done.returncode == 0
        except (OSError, subprocess.TimeoutExpired, urllib.error.URLError, ValueError):
            return False
        return True
