"""Runs and supervises the device's Mosquitto broker as a child process of the hub.

Called by the hub's composition root (and the integration tests). Writes the configuration,
password and ACL files rendered by ``outpost.hub.broker`` and ``outpost.hub.acl`` atomically into
``state_dir/broker``, starts ``mosquitto -c FILE``, waits until the port accepts connections and
restarts the broker (with capped exponential backoff, counted in ``restarts``) whenever it exits
without ``stop()``. ``reload()`` rewrites the password and ACL files and sends SIGHUP (Mosquitto
re-reads both; clients already connected keep their session, the new ACLs apply to them at
once). ``renew_certificates()`` applies ``outpost.hub.tls``'s renewal rule and reloads the
broker when a certificate changed (Mosquitto re-reads certfile/keyfile on SIGHUP).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

from outpost.backoff import Backoff
from outpost.files import read_or_create, write_atomic
from outpost.hub.acl import BrokerIdentities, acl_text, password_file_text
from outpost.hub.broker import BrokerConfig, BrokerError, BrokerPaths, render_config

__all__ = ["MosquittoSupervisor", "find_mosquitto", "load_hub_password"]

log = logging.getLogger(__name__)

_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = "install it with 'apt-get install -y mosquitto' (or run scripts/services/mosquitto.sh)"


def find_mosquitto(binary: str | None = None) -> str:
    """Path of the ``mosquitto`` executable (PATH, then the sbin directories Debian uses)."""
    if binary is not None:
        if shutil.which(binary) is None:
            raise BrokerError(f"mosquitto binary {binary!r} not found or not executable; {INSTALL_HINT}")
        return binary
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path=os.pathsep.join(_SEARCH))
    if found is None:
        raise BrokerError(f"the 'mosquitto' broker is not installed; {INSTALL_HINT}")
    return found


def load_hub_password(state_dir: Path) -> str:
    """The hub user's random broker password, created (0600) in ``state_dir`` on first use."""
    return read_or_create(state_dir / "hub.password", lambda: secrets.token_urlsafe(32).encode()).decode().strip()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Mosquitto does: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoSupervisor:
    """Owns one Mosquitto process: ``start()``, automatic restart, ``reload()``, ``stop()``.

    ``state_dir`` is the hub's state directory; the broker's files go to ``state_dir/broker``
    (``paths``). Thread-safe; the restart watcher is a daemon thread.
    """

    def __init__(
        self,
        state_dir: Path,
        config: BrokerConfig,
        identities: BrokerIdentities,
        *,
        binary: str | None = None,
        start_timeout: float = 15.0,
        backoff: tuple[float, float] = (0.2, 5.0),
        stable_after: float = 30.0,
    ) -> None:
        if config.user is None and os.geteuid() == 0:
            # As root Mosquitto would drop to "mosquitto", who cannot read our 0600 files.
            config = replace(config, user=pwd.getpwuid(os.geteuid()).pw_name)
        self.config = config
        self.paths = BrokerPaths(Path(state_dir) / "broker")
        self._identities = identities
        self._binary = binary
        self._start_timeout = start_timeout
        self._backoff = Backoff(first=backoff[0], cap=backoff[1])
        self._failures = 1  # quick exits in a row, plus one: the next restart waits ``Backoff.delay(failures)``
        self._stable_after = stable_after
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._started_at = 0.0
        #: how many times the broker exited on its own and was started again
        self.restarts = 0
        self.last_exit_code: int | None = None

    # -- files ------------------------------------------------------------------------------

    def _ensure_certificates(self, now: dt.datetime | None) -> bool:
        # Imported here: cryptography costs ~8 MB of RSS, and a hub without a TLS listener (no
        # leaf devices) never needs it.
        from outpost.hub import tls

        p = self.paths
        files = tls.TlsFiles(ca_cert=p.ca_cert, ca_key=p.ca_key, server_cert=p.server_cert, server_key=p.server_key)
        return tls.ensure_certificates(files, now or dt.datetime.now(dt.UTC))

    def write_files(self, now: dt.datetime | None = None) -> None:
        """Render and atomically write config, password and ACL files (and certificates if TLS)."""
        p = self.paths
        p.root.mkdir(parents=True, exist_ok=True)
        p.persistence_dir.mkdir(mode=0o700, exist_ok=True)
        if self.config.tls is not None:
            self._ensure_certificates(now)
        self._write_auth()
        write_atomic(p.config, render_config(self.config, p), 0o600)

    def _write_auth(self) -> None:
        write_atomic(self.paths.password_file, password_file_text(self._identities), 0o600)
        write_atomic(self.paths.acl_file, acl_text(self._identities), 0o600)

    @property
    def identities(self) -> BrokerIdentities:
        return self._identities

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    # -- lifecycle --------------------------------------------------------------------------

    def _reap_stale(self) -> None:
        """Stop a broker a previous hub left running (the hub was killed with -9; the broker lives in
        its own session). SIGTERM makes Mosquitto save its persistence file, so queued messages and
        retained twins carry over to the broker started next."""
        pid_file = self.paths.root / "mosquitto.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.paths.config).encode() not in cmdline:
            return  # the pid was reused by something else: leave it alone
        log.warning("stopping mosquitto (pid %d) left running by a previous hub", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def start(self) -> None:
        """Write the files, start the broker, wait until it accepts connections; then supervise it."""
        binary = find_mosquitto(self._binary)
        self._reap_stale()
        listeners = [(self.config.host, self.config.port)]
        if self.config.tls is not None:
            listeners.append((self.config.tls.host, self.config.tls.port))
        for host, port in listeners:
            # Checked first: "port open" would otherwise be answered by whoever holds the port.
            if not _port_free(host, port):
                raise BrokerError(f"port {port} on {host} is already in use (another broker?); choose another port")
        with self._lock:
            if self._proc is not None:
                return
            self._stopping.clear()
            self.write_files()
            self._spawn(binary)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch, args=(binary,), name="mosquitto-supervisor", daemon=True)
        self._watcher.start()

    def _spawn(self, binary: str) -> None:
        stderr_path = self.paths.root / "mosquitto.stderr"
        with open(stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.paths.config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # a Ctrl-C to the hub's terminal does not kill the broker first
            )
        self._started_at = time.monotonic()
        write_atomic(self.paths.root / "mosquitto.pid", f"{self._proc.pid}\n", 0o644)
        log.info("mosquitto started (pid %d, port %d)", self._proc.pid, self.config.port)

    def _failure_detail(self) -> str:
        tails = []
        for path in (self.paths.root / "mosquitto.stderr", self.paths.log_file):
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").strip().splitlines()[-8:]
                if lines:
                    tails.append(f"{path}:\n  " + "\n  ".join(lines))
        return "\n".join(tails) or "(no output)"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            with self._lock:
                proc = self._proc
            if proc is None:
                raise BrokerError("the broker was stopped while starting")
            code = proc.poll()
            if code is not None:
                self.last_exit_code = code
                raise BrokerError(
                    f"mosquitto exited with code {code} while starting (port {self.config.port} in use? "
                    f"bad configuration?)\n{self._failure_detail()}"
                )
            if _port_open(self.config.host, self.config.port):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.config.host}:{self.config.port} "
                    f"within {self._start_timeout:.0f} s\n{self._failure_detail()}"
                )
            time.sleep(0.05)

    def _watch(self, binary: str) -> None:
        while not self._stopping.is_set():
            with self._lock:
                proc = self._proc
            if proc is None:
                return
            try:
                code = proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            if self._stopping.is_set():
                return
            self.last_exit_code = code
            ran = time.monotonic() - self._started_at
            self._failures = 1 if ran >= self._stable_after else self._failures + 1
            delay = self._backoff.delay(self._failures)
            log.warning("mosquitto exited with code %s after %.1f s; restarting in %.1f s", code, ran, delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                try:
                    self._spawn(binary)
                except OSError as exc:
                    log.error("could not restart mosquitto: %s", exc)
                    continue
            with contextlib.suppress(BrokerError):
                self._wait_ready()  # an immediate exit is handled by the next round

    def wait_running(self, timeout: float = 15.0) -> None:
        """Block until the broker (possibly restarted) accepts connections; BrokerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                proc = self._proc
            if proc is not None and proc.poll() is None and _port_open(self.config.host, self.config.port):
                return
            time.sleep(0.05)
        raise BrokerError(f"the broker is not accepting connections after {timeout:.0f} s\n{self._failure_detail()}")

    def reload(self, identities: BrokerIdentities | None = None) -> None:
        """Rewrite the password and ACL files (with new identities if given) and SIGHUP the broker."""
        with self._lock:
            if identities is not None:
                self._identities = identities
            self._write_auth()
            self._signal(signal.SIGHUP)

    def renew_certificates(self, now: dt.datetime | None = None) -> bool:
        """Renew the TLS certificates if the renewal rule says so; reload the broker; True if renewed."""
        if self.config.tls is None:
            return False
        with self._lock:
            changed = self._ensure_certificates(now)
            if changed:
                log.info("TLS certificates renewed; reloading mosquitto")
                self._signal(signal.SIGHUP)
        return changed

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising and terminate the broker (SIGTERM, so it saves its database; then SIGKILL)."""
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout)
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.last_exit_code = proc.returncode
        log.info("mosquitto stopped (exit code %s)", proc.returncode)

    def __enter__(self) -> MosquittoSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
