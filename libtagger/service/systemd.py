"""systemd's notify protocol (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

A datagram to the socket named by ``$NOTIFY_SOCKET``; without it (not under systemd, or
``Type=simple``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd when running under it; harmless otherwise."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self._address = address or None

    @property
    def active(self) -> bool:
        """Whether systemd is listening."""
        return self._address is not None

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` lines (READY=1, STATUS=…, WATCHDOG=1, STOPPING=1)."""
        if self._address is None:
            return
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)

    @staticmethod
    def watchdog_interval() -> float | None:
        """Seconds between keep-alives: half of systemd's WatchdogSec, if it set one for us."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None
