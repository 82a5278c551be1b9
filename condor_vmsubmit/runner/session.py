"""A libvirt connection for one job: by default a private ``qemu:///session`` in the sandbox.

The session daemon keeps its runtime, config and cache folders under the sandbox's
state folder, so jobs on one node share no names, sockets or files, and the daemon
and QEMU live in the job's process tree (see :mod:`.guard`).  A configured URI
(``--libvirt-uri``) skips all that and uses an existing daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import libvirt

from ..errors import VMSubmitError
from . import guard

SOCKET_WAIT_SECONDS = 30.0
# struct sockaddr_un.sun_path holds 108 bytes; libvirt puts QEMU's monitor socket deepest.
MAX_SOCKET_PATH = 107
_DEEPEST_SOCKET = "config/libvirt/qemu/lib/domain-999-cvm-0123456789/monitor.sock"


class SessionError(VMSubmitError):
    """The per-job libvirt session could not be started."""


_EVENT_LOOP_STARTED = False


def start_event_loop() -> None:
    """libvirt's default event loop in a daemon thread (lifecycle events, keepalives)."""
    global _EVENT_LOOP_STARTED
    if _EVENT_LOOP_STARTED:
        return
    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        # Signals go to the main thread, whose wait they interrupt (lifecycle.Signals).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _EVENT_LOOP_STARTED = True


def state_folder(sandbox_state: Path) -> Path:
    """Where the session keeps its files: the sandbox's own folder, unless its socket paths
    would be too long for UNIX sockets; then a short private folder in /tmp (the guardian
    removes either when the job ends)."""
    if len(str(sandbox_state / _DEEPEST_SOCKET)) <= MAX_SOCKET_PATH:
        return sandbox_state
    return Path(tempfile.mkdtemp(prefix="cvm-"))


class Session:
    """The job's libvirt connection; a context manager that leaves nothing behind."""

    def __init__(self, sandbox_state: Path, uri: str | None = None):
        self.uri = uri
        self.sandbox_state = sandbox_state
        self.state_dir: Path | None = None
        self.guardian: subprocess.Popen | None = None
        self.connection: libvirt.virConnect | None = None

    def __enter__(self) -> Session:
        start_event_loop()
        try:
            if self.uri is None:
                self._start_private_daemon()
            self.connection = self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> libvirt.virConnect:
        """Connect; a fresh daemon may have made its socket a moment before it listens."""
        deadline = time.monotonic() + (SOCKET_WAIT_SECONDS if self.guardian else 0)
        while True:
            try:
                return libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                if time.monotonic() > deadline or (self.guardian and self.guardian.poll() is not None):
                    raise SessionError(f"cannot connect to {self.uri}: {exc.get_error_message()}") from None
            time.sleep(0.05)

    def _start_private_daemon(self) -> None:
        self.state_dir = state_folder(self.sandbox_state)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        for folder in ("run", "config", "cache"):
            (self.state_dir / folder).mkdir(mode=0o700, exist_ok=True)
        self.guardian = subprocess.Popen(
            [sys.executable, "-m", "condor_vmsubmit.runner.guard", str(self.state_dir), str(os.getpid())],
            stdin=subprocess.PIPE, start_new_session=True)
        socket = guard.socket_path(self.state_dir)
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while not socket.exists():
            if self.guardian.poll() is not None or time.monotonic() > deadline:
                log = (self.state_dir / "libvirtd.log")
                tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                raise SessionError(f"the per-job libvirtd did not start: {tail.strip()}")
            time.sleep(0.02)
        self.uri = guard.uri(self.state_dir)

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our connection, let the guardian destroy what is left and stop libvirtd."""
        if self.connection is not None:
            try:
                self.connection.close()
            except libvirt.libvirtError:
                pass
            self.connection = None
        if self.guardian is not None:
            self.guardian.stdin.close()
            self.guardian.wait()
            self.guardian = None
