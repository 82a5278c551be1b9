"""Read a disk image's format, size and layout from its headers: VMDK, qcow2 or raw.

:func:`read_image` is the entry point for anything that will run, shared by the submit side
(the VMDK adapter) and the execute side (the runner and policy code checking what a sandbox
really holds); :func:`read_header` gives one image's own facts, as ``qemu-img info`` does.
The format is recognised by content the way QEMU probes it, so the format written into
the spec is the one QEMU would find; formats this tool does not run are refused by name.
Images with a backing file are refused unless the caller allows them, and then the whole
chain is read and must stay next to the image.
"""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, UnsafeInputError
from .imageio import SECTOR, ImageFile, ImageInfo, check_size, sibling
from .qcow2 import MAGIC as QCOW2_MAGIC
from .qcow2 import read_qcow2
from .vmdkfile import NO_PARENT_CID, VMDK3_MAGIC, VMDK4_MAGIC, read_vmdk

MAX_CHAIN = 16
# Formats QEMU recognises by their first bytes (each probe's conditions, all must hold), which
# this tool refuses to run: convert them.
_FOREIGN = (
    ("qed", ((0, b"QED\x00"),)),
    ("vpc (VHD)", ((0, b"conectix"),)),
    ("vhdx", ((0, b"vhdxfile"),)),
    ("parallels", ((0, b"WithoutFreeSpace"), (16, struct.pack("<I", 2)))),
    ("parallels", ((0, b"WithouFreSpacExt"), (16, struct.pack("<I", 2)))),
    ("bochs", ((0, b"Bochs Virtual HD Image\x00"), (32, b"Redolog\x00"), (48, b"Growing\x00"))),
    ("cloop", ((0, b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"),)),
    ("luks (encrypted)", ((0, b"LUKS\xba\xbe\x00\x01"),)),
    ("vdi", ((0x40, struct.pack("<II", 0xBEDA107F, 0x00010001)),)),
)


def read_image(path: str | Path, *, allow_backing: bool = False) -> ImageInfo:
    """What the image at ``path`` is, from its headers only (at most 64 KiB of each file).

    A backing/parent file is refused (:class:`UnsafeInputError`) unless ``allow_backing``;
    then :attr:`ImageInfo.parent` holds the parent, read the same way.
    """
    return _read_chain(str(path), allow_backing, ())


def probe(head: bytes, name: str = "") -> str:
    """The format QEMU would find in an image starting with ``head`` (its first sector).

    >>> probe(b"KDMV" + bytes(508)), probe(b"QFI\\xfb\\x00\\x00\\x00\\x03"), probe(bytes(512))
    ('vmdk', 'qcow2', 'raw')
    >>> probe(b"# Disk DescriptorFile\\nversion=1\\nCID=1\\n"), probe(b"vhdxfile" + bytes(8))
    ('vmdk', 'vhdx')
    """
    if head.startswith((VMDK4_MAGIC, VMDK3_MAGIC)) or _looks_like_descriptor(head[:SECTOR]):
        return "vmdk"
    version = struct.unpack_from(">I", head, 4)[0] if head.startswith(QCOW2_MAGIC) and len(head) >= 8 else 0
    if version >= 2:
        return "qcow2"
    if version == 1:
        return "qcow (version 1)"
    for fmt, conditions in _FOREIGN:
        if all(head[offset:offset + len(magic)] == magic for offset, magic in conditions):
            return fmt
    if name.lower().endswith(".dmg"):
        return "dmg"
    return "raw"


def _looks_like_descriptor(head: bytes) -> bool:
    """QEMU's vmdk_probe for text: comments and blank lines, then ``version=1|2|3``.

    >>> _looks_like_descriptor(b"# Disk DescriptorFile\\r\\nversion=1\\r\\n"), _looks_like_descriptor(b"version=4\\n")
    (True, False)
    """
    pos = 0
    while pos < len(head):
        if head.startswith(b"#", pos):
            pos = head.find(b"\n", pos) + 1 or len(head)
            continue
        if head.startswith(b" ", pos):
            end = len(head) - len(head[pos:].lstrip(b" "))
            end += head.startswith(b"\r", end)
            if not head.startswith(b"\n", end):
                return False
            pos = end + 1
            continue
        return any(head.startswith(b"version=%d%s" % (n, eol), pos) for n in (1, 2, 3) for eol in (b"\n", b"\r\n"))
    return False


def read_header(path: str | Path) -> ImageInfo:
    """The image's own facts, as ``qemu-img info`` shows them: a backing file is reported, not
    followed or judged (use :func:`read_image` for anything that will run)."""
    path = str(path)
    log: list[int] = []
    with ImageFile(path, log=log) as image:
        head = image.read_at(0, SECTOR)
        fmt = probe(head, path)
        if fmt == "vmdk":
            info = read_vmdk(image, head)
        elif fmt == "qcow2":
            info = read_qcow2(image, head)
        elif fmt == "raw":
            size = -(-image.size // SECTOR) * SECTOR   # QEMU rounds a raw file up to whole sectors
            info = ImageInfo(path=path, format="raw", virtual_size=check_size(size, path), files=(path,))
        else:
            raise InputError(f"a {fmt} image: this tool runs VMDK, qcow2 and raw disks "
                             "(convert it with qemu-img convert -O qcow2)", path=path)
    return replace(info, bytes_read=sum(log))


def _read_chain(path: str, allow_backing: bool, seen: tuple[str, ...]) -> ImageInfo:
    info = read_header(path)
    if info.backing is None:
        return info
    if not allow_backing:
        raise UnsafeInputError(f"{info.format} image has a backing file '{info.backing}'; images with "
                               "backing files are refused unless allowed (--allow-backing), which also "
                               "transfers the parent", path=path)
    real = os.path.realpath(path)
    if real in seen or len(seen) >= MAX_CHAIN:
        raise UnsafeInputError(f"backing chain loops or is longer than {MAX_CHAIN} images", path=path)
    parent = _read_chain(sibling(path, info.backing, "backing file"), True, seen + (real,))
    if info.backing_format is not None and info.backing_format != parent.format:
        raise UnsafeInputError(f"backing file '{info.backing}' is declared {info.backing_format} "
                               f"but is a {parent.format} image", path=path)
    notes = info.notes
    if (info.format == "vmdk" and parent.format == "vmdk" and info.parent_cid not in (None, NO_PARENT_CID)
            and info.parent_cid != parent.cid):
        notes += (f"parentCID {info.parent_cid:08x} does not match the parent's CID {parent.cid or 0:08x}: "
                  "the parent changed after this delta was made",)
    return replace(info, parent=parent, backing_format=parent.format, notes=notes)
