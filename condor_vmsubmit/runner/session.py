"""A libvirt connection for one job: by default a private ``qemu:///session`` in the sandbox.

The session daemon keeps its runtime, config and cache folders under the sandbox's
state folder, so jobs on one node share no names, sockets or files, and the daemon
and QEMU live in the job's process tree (see :mod:`.guard`).  A configured URI
(``--libvirt-uri``) skips all that and uses an existing daemon.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import libvirt

from .guard import SOCKET_WAIT_SECONDS, GuardianProcess, SessionError

_EVENT_LOOP_STARTED = False


def start_event_loop() -> None:
    """libvirt's default event loop in a daemon thread (lifecycle events, keepalives)."""
    global _EVENT_LOOP_STARTED
    if _EVENT_LOOP_STARTED:
        return
    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        # Signals go to the main thread, whose wait they interrupt (backend.Signals).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _EVENT_LOOP_STARTED = True


class Session:
    """The job's libvirt connection; a context manager that leaves nothing behind.

    Without a URI it connects to the job's own libvirtd: the one of ``guardian`` when the
    caller started it beforehand (and stops it), else one it starts and stops itself.
    """

    def __init__(self, sandbox_state: Path, uri: str | None = None, guardian: GuardianProcess | None = None):
        self.uri = uri
        self.sandbox_state = sandbox_state
        self.guardian = guardian
        self.owns_guardian = False
        self.connection: libvirt.virConnect | None = None

    def __enter__(self) -> Session:
        start_event_loop()
        try:
            if self.uri is None:
                if self.guardian is None:
                    self.guardian, self.owns_guardian = GuardianProcess(self.sandbox_state), True
                self.guardian.wait_until_listening()
                self.uri = self.guardian.uri
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
                if time.monotonic() > deadline or (self.guardian and not self.guardian.running()):
                    raise SessionError(f"cannot connect to {self.uri}: {exc.get_error_message()}") from None
            time.sleep(0.01)

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our connection; stop the daemon when we started it."""
        if self.connection is not None:
            try:
                self.connection.close()
            except libvirt.libvirtError:
                pass
            self.connection = None
        if self.owns_guardian:
            self.guardian.stop()
