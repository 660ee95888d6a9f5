"""The device probes ``outpost check`` needs that touch the network or run programs.

Implements ``outpost.agent.diagnostics.Probes``; chosen by the agent's composition root.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

__all__ = ["HostProbes"]


class HostProbes:
    """Probes of this machine: a TCP connect, ``timedatectl``."""

    def broker_answers(self, host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def ntp_synchronized(self) -> str:
        """``yes``/``no`` as timedatectl says, or empty when it cannot tell."""
        if not shutil.which("timedatectl"):
            return ""
        done = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()
