"""A job's shared folders in its domain: each a folder of the sandbox, mounted in the guest by its tag.

Each of the spec's shared folders is the sandbox folder of the same base name (HTCondor transfers
the submitted folder there).  With virtiofs (the spec asks for it, or leaves the choice and the
execute node can start ``virtiofsd``) the domain names the daemon's socket in the runner's state
folder and shares the guest's memory (memfd, as vhost-user needs); the runner starts the daemon
(:mod:`condor_vmsubmit.runner.shares`).  Otherwise the folder is a 9p export
(``accessmode='mapped'``: the guest's owners and modes live in extended attributes, never as host
owners).  The guest mounts it by its tag: ``mount -t virtiofs TAG /mnt`` or
``mount -t 9p -o trans=virtio TAG /mnt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxml import etree

from ..errors import UnsafeInputError
from ..spec import VMSpec
from .sandbox import Sandbox


@dataclass(frozen=True)
class Share:
    """One folder of the sandbox as the guest sees it."""

    folder: Path
    tag: str
    driver: str                  # "virtiofs" or "9p"
    readonly: bool
    socket: Path | None = None   # virtiofsd's socket (virtiofs only)


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
