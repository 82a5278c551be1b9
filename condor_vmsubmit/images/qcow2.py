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
INCOMPAT_COMPRESSION, INCOMPAT_EXTENDED_L2 = 1 << 3, 1 << 4
INCOMPAT_KNOWN = (1 << 5) - 1
# QEMU's limits on the tables a header points to (block/qcow2.h).
MAX_REFTABLE_BYTES = 8 * 1024**2
MAX_L1_BYTES = 32 * 1024**2
MAX_SNAPSHOTS = 65536
SNAPSHOT_HEADER_BYTES = 40
_FIRST_READ = 4096


def read_qcow2(image: ImageFile, head: bytes) -> ImageInfo:
    """Read the qcow2 ``image`` whose first bytes are ``head``."""
    path = image.path
    data = head + image.read_at(len(head), _FIRST_READ - len(head))
    if len(data) < _HEADER.size:
        raise InputError("truncated qcow2 header", path=path)
    (_magic, version, backing_offset, backing_size, cluster_bits, size, crypt_method, l1_size, l1_offset,
     refcount_offset, refcount_clusters, snapshots, snapshots_offset) = _HEADER.unpack_from(data)
    if version not in (2, 3):
        raise InputError(f"unsupported qcow2 version {version}", path=path)
    if not 9 <= cluster_bits <= 21:
        raise InputError(f"unsupported qcow2 cluster size 2^{cluster_bits}", path=path)
    cluster_size = 1 << cluster_bits
    incompatible, header_length = 0, _HEADER.size
    if version == 3:
        if len(data) < _HEADER.size + _HEADER_V3.size:
            raise InputError("truncated qcow2 header", path=path)
        incompatible, _compatible, _autoclear, refcount_order, header_length = _HEADER_V3.unpack_from(
            data, _HEADER.size)
        if header_length < 104 or header_length > cluster_size:
            raise InputError(f"invalid qcow2 header length {header_length}", path=path)
        if refcount_order > 6:
            raise InputError("invalid qcow2 refcount order", path=path)
    if incompatible & ~INCOMPAT_KNOWN:
        raise InputError(f"unsupported qcow2 feature bits {incompatible & ~INCOMPAT_KNOWN:#x}", path=path)
    if incompatible & INCOMPAT_CORRUPT:
        raise InputError("qcow2 image is marked corrupt (repair it with qemu-img check -r all)", path=path)
    if header_length > 104:
        _check_compression(data[104] if len(data) > 104 else 0, incompatible, path)
    if incompatible & INCOMPAT_EXTENDED_L2 and cluster_bits < 14:
        raise InputError("extended L2 entries need clusters of at least 16 KiB", path=path)
    if crypt_method > 2:
        raise InputError(f"unsupported qcow2 encryption method {crypt_method}", path=path)
    if refcount_clusters == 0:
        raise InputError("qcow2 image has no reference count table", path=path)
    _check_table("reference count table", refcount_offset, refcount_clusters, cluster_size, MAX_REFTABLE_BYTES,
                 cluster_size, path)
    _check_table("snapshot table", snapshots_offset, snapshots, SNAPSHOT_HEADER_BYTES,
                 SNAPSHOT_HEADER_BYTES * MAX_SNAPSHOTS, cluster_size, path)
    _check_l1(l1_size, l1_offset, size, cluster_bits, bool(incompatible & INCOMPAT_EXTENDED_L2), path)
    if backing_offset and (backing_offset > cluster_size or backing_size > 1023
                           or backing_offset + backing_size > cluster_size):
        raise InputError("invalid qcow2 backing file name location or length", path=path)
    extension_end = backing_offset if backing_offset else cluster_size
    extensions = _extensions(image, data, header_length, extension_end)
    if incompatible & INCOMPAT_DATA_FILE or EXT_DATA_FILE in extensions:
        name = extensions.get(EXT_DATA_FILE, b"").decode("utf-8", "replace")
        raise UnsafeInputError(f"qcow2 image keeps its data in an external file '{name}'", path=path)
    backing = None
    if backing_offset and backing_size:
        name = _slice(image, data, backing_offset, backing_size).split(b"\x00", 1)[0]
        backing = name.decode("utf-8", "replace") or None
    backing_format = extensions.get(EXT_BACKING_FORMAT)
    notes = []
    if incompatible & INCOMPAT_DIRTY:
        notes.append("qcow2 image was not closed cleanly (QEMU repairs its refcounts on first write)")
    if snapshots:
        notes.append(f"qcow2 image holds {snapshots} internal snapshot(s); the guest starts from the current state")
    return ImageInfo(
        path=path,
        format="qcow2",
        virtual_size=check_size(size // 512 * 512, path),   # QEMU 7.2 keeps whole sectors
        version=version,
        backing=backing,
        backing_format=backing_format.decode("ascii", "replace") if backing_format else None,
        files=(path,),
        encrypted=crypt_method != 0 or EXT_FULL_DISK_ENCRYPTION in extensions,
        notes=tuple(notes),
    )


def _check_compression(kind: int, incompatible: int, path: str) -> None:
    """QEMU's validate_compression_type: zlib (0) or zstd (1), flagged as incompatible when not zlib."""
    if kind > 1:
        raise InputError(f"unknown qcow2 compression type {kind}", path=path)
    if bool(kind) != bool(incompatible & INCOMPAT_COMPRESSION):
        raise InputError("qcow2 compression type and its incompatible feature bit disagree", path=path)


def _check_table(name: str, offset: int, entries: int, entry_bytes: int, max_bytes: int, cluster_size: int,
                 path: str) -> None:
    """QEMU's qcow2_validate_table: bounded size, cluster-aligned offset that does not overflow."""
    if entries > max_bytes // entry_bytes:
        raise InputError(f"qcow2 {name} too large", path=path)
    if offset % cluster_size or offset > 2**63 - 1 - entries * entry_bytes:
        raise InputError(f"qcow2 {name} offset invalid", path=path)


def _check_l1(l1_size: int, l1_offset: int, size: int, cluster_bits: int, extended_l2: bool, path: str) -> None:
    """The active L1 table must be small enough and cover the virtual size (qcow2_do_open)."""
    if l1_size > MAX_L1_BYTES // 8:
        raise InputError("qcow2 active L1 table too large", path=path)
    shift = cluster_bits + cluster_bits - (4 if extended_l2 else 3)
    needed = (size + (1 << shift) - 1) >> shift
    if needed > 2**31 - 1:
        raise InputError("qcow2 image is too big", path=path)
    if l1_size < needed:
        raise InputError("qcow2 L1 table is too small for the virtual size", path=path)
    _check_table("active L1 table", l1_offset, l1_size, 8, MAX_L1_BYTES, 1 << cluster_bits, path)


def _extensions(image: ImageFile, data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Header extensions by type (QEMU's qcow2_read_extensions bounds checks)."""
    found: dict[int, bytes] = {}
    offset = start
    while offset < end:
        if offset + 8 > end:
            raise InputError("invalid qcow2 header extension", path=image.path)
        kind, length = struct.unpack(">II", _slice(image, data, offset, 8))
        offset += 8
        if length > end - offset:
            raise InputError("qcow2 header extension too large", path=image.path)
        if kind == EXT_END:
            break
        if kind == EXT_BACKING_FORMAT and length >= 16:
            raise InputError("qcow2 backing format name too long", path=image.path)
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
