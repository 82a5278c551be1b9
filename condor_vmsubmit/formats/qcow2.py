"""qcow2 headers, read the way QEMU's block/qcow2.c checks them.

Only the header, its extensions and the backing file name are read (all in the first
cluster, usually a few hundred bytes).  The backing file and its declared format are
reported; an external data file is refused outright (it points the guest at another file).
"""

from __future__ import annotations

import struct

from ..errors import InputError, UnsafeInputError
from .imageio import ImageFile, ImageInfo, check_size

MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")     # version 2 header, 72 bytes
_HEADER_V3 = struct.Struct(">QQQII")           # incompatible/compatible/autoclear features, refcount order, length

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_DATA_FILE = 0x44415441
EXT_FULL_DISK_ENCRYPTION = 0x0537BE77

INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1 << 0, 1 << 1, 1 << 2
INCOMPAT_KNOWN = (1 << 5) - 1   # dirty, corrupt, data file, compression type, extended L2
_FIRST_READ = 4096


def read_qcow2(image: ImageFile, head: bytes) -> ImageInfo:
    """Read the qcow2 ``image`` whose first bytes are ``head``."""
    path = image.path
    data = head + image.read_at(len(head), _FIRST_READ - len(head))
    if len(data) < _HEADER.size:
        raise InputError("truncated qcow2 header", path=path)
    (_magic, version, backing_offset, backing_size, cluster_bits, size, crypt_method, _l1_size, _l1_offset,
     _refcount_offset, _refcount_clusters, snapshots, _snapshots_offset) = _HEADER.unpack_from(data)
    if version not in (2, 3):
        raise InputError(f"unsupported qcow2 version {version}", path=path)
    if not 9 <= cluster_bits <= 21:
        raise InputError(f"unsupported qcow2 cluster size 2^{cluster_bits}", path=path)
    cluster_size = 1 << cluster_bits
    incompatible, header_length = 0, _HEADER.size
    if version == 3:
        if len(data) < _HEADER.size + _HEADER_V3.size:
            raise InputError("truncated qcow2 header", path=path)
        incompatible, _compatible, _autoclear, refcount_order, header_length = _HEADER_V3.unpack_from(data, _HEADER.size)
        if header_length < 104 or header_length > cluster_size:
            raise InputError(f"invalid qcow2 header length {header_length}", path=path)
        if refcount_order > 6:
            raise InputError("invalid qcow2 refcount order", path=path)
    if incompatible & ~INCOMPAT_KNOWN:
        raise InputError(f"unsupported qcow2 feature bits {incompatible & ~INCOMPAT_KNOWN:#x}", path=path)
    if incompatible & INCOMPAT_CORRUPT:
        raise InputError("qcow2 image is marked corrupt (repair it with qemu-img check -r all)", path=path)
    if crypt_method > 2:
        raise InputError(f"unsupported qcow2 encryption method {crypt_method}", path=path)
    if backing_offset and (backing_offset > cluster_size or backing_size > 1023
                           or backing_offset + backing_size > cluster_size):
        raise InputError("invalid qcow2 backing file name location or length", path=path)
    extension_end = backing_offset if backing_offset else cluster_size
    extensions = _extensions(image, data, header_length, extension_end)
    if incompatible & INCOMPAT_DATA_FILE or EXT_DATA_FILE in extensions:
        name = extensions.get(EXT_DATA_FILE, b"").decode("utf-8", "surrogateescape")
        raise UnsafeInputError(f"qcow2 image keeps its data in an external file '{name}'", path=path)
    backing = None
    if backing_offset and backing_size:
        backing = _slice(image, data, backing_offset, backing_size).decode("utf-8", "surrogateescape")
    backing_format = extensions.get(EXT_BACKING_FORMAT)
    notes = []
    if incompatible & INCOMPAT_DIRTY:
        notes.append("qcow2 image was not closed cleanly (QEMU repairs its refcounts on first write)")
    if snapshots:
        notes.append(f"qcow2 image holds {snapshots} internal snapshot(s); the guest starts from the current state")
    return ImageInfo(
        path=path,
        format="qcow2",
        virtual_size=check_size(size, path),
        version=version,
        backing=backing,
        backing_format=backing_format.decode("ascii", "replace") if backing_format else None,
        files=(path,),
        encrypted=crypt_method != 0 or EXT_FULL_DISK_ENCRYPTION in extensions,
        notes=tuple(notes),
    )


def _extensions(image: ImageFile, data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Header extensions by type (QEMU's qcow2_read_extensions bounds checks)."""
    found: dict[int, bytes] = {}
    offset = start
    while offset < end:
        if offset + 8 > end:
            raise InputError("invalid qcow2 header extension", path=image.path)
        kind, length = struct.unpack(">II", _slice(image, data, offset, 8))
        offset += 8
        if kind == EXT_END:
            break
        if length > end - offset:
            raise InputError("invalid qcow2 header extension length", path=image.path)
        if kind in (EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FULL_DISK_ENCRYPTION):
            found[kind] = _slice(image, data, offset, length)
        offset += (length + 7) & ~7
    return found


def _slice(image: ImageFile, data: bytes, offset: int, length: int) -> bytes:
    """Bytes from the first read when they are in it, else read just them."""
    if offset + length <= len(data):
        return data[offset:offset + length]
    chunk = image.read_at(offset, length)
    if len(chunk) < length:
        raise InputError("truncated qcow2 header", path=image.path)
    return chunk
