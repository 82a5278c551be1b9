"""Shared folders on the execute node: the ``virtiofsd`` that serves each virtiofs share.

The domain names each daemon's socket in the runner's state folder
(:mod:`condor_vmsubmit.domain.shares`); the runner starts ``virtiofsd`` itself (as root only: see
:func:`virtiofsd`) before the guest: libvirt 9's session mode refuses to start it ("virtiofs is not
yet supported in session mode") but accepts an externally started daemon (``<source socket>``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

from ..domain.shares import Share
from ..errors import UnsafeInputError, VMSubmitError

VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
SOCKET_WAIT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class ShareError(VMSubmitError):
    """A shared folder could not be served to the guest."""


def virtiofsd() -> str | None:
    """This host's virtiofsd, when the runner can start it: QEMU's C virtiofsd needs root (as
    another user it cannot write its pid file under /var/run/virtiofsd, nor build its sandbox)."""
    if os.geteuid() != 0:
        return None
    return next((p for p in VIRTIOFSD_PATHS if os.access(p, os.X_OK)), None) or shutil.which("virtiofsd")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def virtiofs_daemons(shares: tuple[Share, ...]) -> Iterator[None]:
    """A virtiofsd per virtiofs share, listening before the guest starts, gone when it ends
    (each also dies with the runner and exits when QEMU disconnects); they log to
    ``virtiofsd.log`` next to their sockets."""
    daemons: list[subprocess.Popen] = []
    try:
        for share in shares:
            if share.driver != "virtiofs":
                continue
            share.folder.mkdir(exist_ok=True)
            if share.folder.is_symlink() or not share.folder.is_dir():
                raise UnsafeInputError(f"shared folder {share.folder.name} in the sandbox is not a plain folder")
            binary = virtiofsd()
            if binary is None:
                raise ShareError(f"the job shares {share.folder.name} with virtiofs but the runner cannot start "
                                 "virtiofsd here (it needs root and QEMU's virtiofsd)")
            share.socket.parent.mkdir(mode=0o700, exist_ok=True)
            share.socket.unlink(missing_ok=True)
            log = share.socket.parent / "virtiofsd.log"
            with open(log, "ab") as out:
                daemons.append(subprocess.Popen(
                    [binary, f"--socket-path={share.socket}", "-o", f"source={share.folder}", "-o", "cache=auto",
                     "-o", "sandbox=namespace"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=_die_with_parent))
            deadline = time.monotonic() + SOCKET_WAIT_SECONDS
            while not share.socket.exists():
                if daemons[-1].poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-300:].strip()
                    raise ShareError(f"virtiofsd for {share.folder.name} did not start: {tail}")
                time.sleep(0.02)
        yield
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.terminate()
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
