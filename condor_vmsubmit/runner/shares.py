"""Shared folders on the execute side: a folder of the sandbox mounted in the guest.

Each of the spec's shared folders is the sandbox folder of the same base name
(HTCondor transfers the submitted folder there).  With virtiofs (the spec asks for it,
or leaves the choice and this host has ``virtiofsd``) the runner starts ``virtiofsd``
itself (as root only: see :func:`virtiofsd`), its socket in the runner's state folder: libvirt 9's
session mode refuses to start it ("virtiofs is not yet supported in session mode") but accepts an externally
started daemon (``<source socket>``); the guest's memory is then shared memfd, as
vhost-user needs.  Otherwise the folder is a 9p export (``accessmode='mapped'``: the
guest's owners and modes live in extended attributes, never as host owners).
The guest mounts it by its tag: ``mount -t virtiofs TAG /mnt`` or
``mount -t 9p -o trans=virtio TAG /mnt``.
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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxml import etree

from ..errors import UnsafeInputError, VMSubmitError
from ..spec import VMSpec
from .sandbox import Sandbox

VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
SOCKET_WAIT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class ShareError(VMSubmitError):
    """A shared folder could not be served to the guest."""


@dataclass(frozen=True)
class Share:
    """One folder of the sandbox as the guest sees it."""

    folder: Path
    tag: str
    driver: str                  # "virtiofs" or "9p"
    readonly: bool
    socket: Path | None = None   # virtiofsd's socket (virtiofs only)


def virtiofsd() -> str | None:
    """This host's virtiofsd, when the runner can start it: QEMU's C virtiofsd needs root (as
    another user it cannot write its pid file under /var/run/virtiofsd, nor build its sandbox)."""
    if os.geteuid() != 0:
        return None
    return next((p for p in VIRTIOFSD_PATHS if os.access(p, os.X_OK)), None) or shutil.which("virtiofsd")


def plan_shares(spec: VMSpec, sandbox: Sandbox, *, virtiofs_available: bool) -> tuple[Share, ...]:
    """The spec's shared folders as sandbox folders, each with its driver.

    >>> from condor_vmsubmit.spec import SharedFolder
    >>> spec = VMSpec("libvirt", "vm", 1, 2**27, shared_folders=(SharedFolder("/home/u/data", "data"),
    ...                                                          SharedFolder("/x/in", "in", "9p", True)))
    >>> [(s.folder.name, s.tag, s.driver, s.socket) for s in plan_shares(spec, Sandbox(Path("/s")),
    ...                                                                 virtiofs_available=True)]
    [('data', 'data', 'virtiofs', PosixPath('/s/.vm/fs0.sock')), ('in', 'in', '9p', None)]
    """
    shares = []
    for index, folder in enumerate(spec.shared_folders):
        driver = folder.driver or ("virtiofs" if virtiofs_available else "9p")
        name = PurePosixPath(folder.source.rstrip("/")).name
        if name in ("", ".", ".."):
            raise UnsafeInputError(f"shared folder '{folder.source}' does not name a folder of the sandbox")
        socket = sandbox.state_dir / f"fs{index}.sock" if driver == "virtiofs" else None
        shares.append(Share(sandbox.root / name, folder.target or name, driver, folder.readonly, socket))
    return tuple(shares)


def add_filesystems(root: etree._Element, shares: tuple[Share, ...]) -> None:
    """Replace the domain's folder filesystems by ``shares``; shared memory when virtiofs needs it."""
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    for old in devices.findall("filesystem"):
        if old.get("type", "mount") == "mount":
            devices.remove(old)
    for share in shares:
        element = etree.SubElement(devices, "filesystem", type="mount",
                                   accessmode="passthrough" if share.driver == "virtiofs" else "mapped")
        if share.driver == "virtiofs":
            etree.SubElement(element, "driver", type="virtiofs", queue="1024")
            etree.SubElement(element, "source", socket=str(share.socket))
        else:
            etree.SubElement(element, "driver", type="path")
            etree.SubElement(element, "source", dir=str(share.folder))
        etree.SubElement(element, "target", dir=share.tag)
        if share.readonly and share.driver != "virtiofs":
            etree.SubElement(element, "readonly")
    if any(share.driver == "virtiofs" for share in shares):
        _shared_memory(root)


def _shared_memory(root: etree._Element) -> None:
    backing = root.find("memoryBacking")
    if backing is None:
        backing = etree.Element("memoryBacking")
        root.find("devices").addprevious(backing)
    for tag, attributes in (("source", {"type": "memfd"}), ("access", {"mode": "shared"})):
        for old in backing.findall(tag):
            backing.remove(old)
        etree.SubElement(backing, tag, attributes)


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
