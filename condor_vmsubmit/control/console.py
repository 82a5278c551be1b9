"""The guest's serial console: attached interactively through libvirt, or followed in its log file.

Attaching opens the console through ``virDomainOpenConsole`` on the job's own libvirt
session (as ``virsh console`` does): keys typed go to the guest, its output comes back, and
``Ctrl-]`` detaches.  The guest keeps running either way, and everything it prints also lands in
the console log in the sandbox.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from ..errors import ControlError

DETACH = b"\x1d"  # Ctrl-]
POLL_SECONDS = 0.2
RUNNING_CHECK_SECONDS = 1.0


def attach(domain, *, force: bool = False, stdin: int = 0, stdout: int = 1) -> str:
    """Connect ``stdin``/``stdout`` to the domain's console until Ctrl-] or the console closes;
    why it ended."""
    import libvirt

    stream = domain.connect().newStream(0)
    try:
        domain.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
    except libvirt.libvirtError as exc:
        raise ControlError(f"cannot open the console: {exc.get_error_message()}"
                           + ("" if force else " (another session may hold it: --force takes it over)")) from None
    closed = threading.Event()

    def guest_to_user() -> None:
        try:
            while data := stream.recv(4096):
                os.write(stdout, data)
        except (libvirt.libvirtError, OSError):
            pass
        closed.set()

    threading.Thread(target=guest_to_user, name="console", daemon=True).start()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved is not None:
        tty.setraw(stdin)
    try:
        return _user_to_guest(stream, closed, stdin)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass


def _user_to_guest(stream, closed: threading.Event, stdin: int) -> str:
    while not closed.is_set():
        readable, _, _ = select.select([stdin], [], [], POLL_SECONDS)
        if not readable:
            continue
        data = os.read(stdin, 4096)
        if not data:
            return "end of input"
        keys, detach, _ = data.partition(DETACH)
        if keys:
            stream.send(keys)
        if detach:
            return "detached"
    return "the console closed"


def tail_offset(path: Path, lines: int) -> int:
    """Where the last ``lines`` lines of ``path`` start (0 for the whole file).

    >>> import tempfile; f = Path(tempfile.mkstemp()[1]); _ = f.write_bytes(b"a\\nb\\nc\\n")
    >>> tail_offset(f, 2), tail_offset(f, 5), tail_offset(f, 0)
    (2, 0, 6)
    """
    data = path.read_bytes()
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end + 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        start = data.rfind(b"\n", 0, end) + 1
        if start == 0:
            return 0
        end = start - 1
    return start


def follow(path: Path, *, lines: int, keep_following: bool, running: Callable[[], bool]) -> None:
    """Print the last ``lines`` lines of the console log; with ``keep_following``, go on printing
    what the guest writes until it stops running (or Ctrl-C)."""
    if not path.exists():
        raise ControlError(f"the console log {path} does not exist (yet)")
    out = sys.stdout.buffer
    offset = tail_offset(path, lines)
    checked = time.monotonic()
    try:
        while True:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            offset += len(data)
            out.write(data)
            out.flush()
            if not keep_following:
                return
            if time.monotonic() - checked > RUNNING_CHECK_SECONDS:
                if not running():
                    return
                checked = time.monotonic()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return
