"""VMDK headers and descriptors, read the way QEMU's block/vmdk.c reads them.

Three shapes of VMDK reach us: a sparse file starting with ``KDMV`` (monolithicSparse, or
streamOptimized whose real header is a footer at the end when gdOffset is -1), an old
``COWD`` sparse file, and a text descriptor file listing extents (monolithicFlat,
twoGbMaxExtentSparse/Flat, vmfs*).  Only the header sector, the descriptor (at most 20
sectors) and the stream footer (3 sectors) are ever read.  Each check that makes QEMU refuse
an image makes us refuse it too, with QEMU's reason.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from ..errors import InputError, UnsafeInputError
from .imageio import SECTOR, Extent, ImageFile, ImageInfo, check_size, sibling

VMDK4_MAGIC = b"KDMV"
VMDK3_MAGIC = b"COWD"
SESPARSE_MAGIC = 0xCAFEBABE
GD_AT_END = 0xFFFFFFFFFFFFFFFF
COMPRESSION_DEFLATE = 1
MARKER_FOOTER = 3
MARKER_END_OF_STREAM = 0
DESC_SIZE = 20 * SECTOR          # QEMU reads an embedded descriptor's CIDs from 20 sectors at 0x200
NO_PARENT_CID = 0xFFFFFFFF
FLAG_REDUNDANT_GD = 1 << 1
MAX_REQUEST_END = 2**63 - 2**30   # QEMU's BDRV_MAX_LENGTH

# createType values QEMU opens from a descriptor file; the raw-device kinds are refused as unsafe.
DESCRIPTOR_TYPES = ("monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse",
                    "twoGbMaxExtentFlat")
RAW_DEVICE_TYPES = ("vmfsRaw", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap", "fullDevice",
                    "partitionedDevice")
EXTENT_TYPES = ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE")

_KEY_VALUE = re.compile(r"^\s*([A-Za-z][\w.]*)\s*=\s*(.*?)\s*$")
# QEMU: sscanf(p, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, ...) at every line start; like
# sscanf, the whitespace between fields may include line ends.
# sscanf also counts a file name whose closing quote is missing (or cut at 511 characters).
_EXTENT_LINE = re.compile(r'\s*(\S{1,10})\s+([+-]?\d+)\s*(\S{1,10})\s*"([^\n\r"]{1,511})(?:"(?:\s*([+-]?\d+))?)?')


@dataclass(frozen=True)
class Descriptor:
    """The facts of a VMDK text descriptor.

    ``values`` holds its ``key = value`` lines; the keys QEMU acts on (CID, parentCID,
    createType, parentFileNameHint) are found the way QEMU finds them, with ``strstr`` on the
    whole text, so a hint QEMU would follow is never missed.

    >>> d = parse_descriptor('# Disk DescriptorFile\\nversion=1\\nCID=fb183c20\\nparentCID=ffffffff\\n'
    ...                      'createType="monolithicFlat"\\nRW 20480 FLAT "d-flat.vmdk" 0\\n'
    ...                      'ddb.adapterType = "lsilogic"\\n')
    >>> d.create_type, d.values["ddb.adapterType"], hex(d.cid), d.parent_hint, d.extents[0].kind
    ('monolithicFlat', 'lsilogic', '0xfb183c20', None, 'FLAT')
    """

    values: dict[str, str] = field(default_factory=dict)
    extents: tuple[Extent, ...] = ()
    cid: int | None = None
    parent_cid: int | None = None
    create_type: str | None = None
    parent_hint: str | None = None


def parse_descriptor(text: str, path: str = "") -> Descriptor:
    """Parse descriptor text (up to its first NUL, as QEMU does)."""
    text = text.split("\x00", 1)[0]
    values: dict[str, str] = {}
    extents: list[Extent] = []
    starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n" and index + 1 < len(text)]
    for number, start in enumerate(starts, start=1):
        extent = _extent_at(text, start, path, number)
        if extent is not None:
            extents.append(extent)
    for line in text.splitlines():
        match = _KEY_VALUE.match(line)
        if match and match.group(1) not in values:
            values[match.group(1)] = _unquote(match.group(2))
    hint = _quoted_after(text, "parentFileNameHint", path) or None   # QEMU ignores an empty hint
    return Descriptor(values=values, extents=tuple(extents), cid=_hex_after(text, "CID"),
                      parent_cid=_hex_after(text, "parentCID"),
                      create_type=_quoted_after(text, "createType", path), parent_hint=hint)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _hex_after(text: str, key: str) -> int | None:
    """QEMU's vmdk_read_cid: the first ``key``, one character skipped, then ``sscanf("%x")``.

    >>> _hex_after("CID=fb183c20\\nparentCID=ffffffff", "parentCID")
    4294967295
    """
    start = text.find(key)
    if start < 0:
        return None
    match = re.match(r"\s*(?:0[xX])?([0-9a-fA-F]+)", text[start + len(key) + 1:])
    return int(match.group(1), 16) & 0xFFFFFFFF if match else None


def _quoted_after(text: str, key: str, path: str) -> str | None:
    """QEMU's way to read createType / parentFileNameHint: skip ``key="``, take up to the next quote."""
    start = text.find(key)
    if start < 0:
        return None
    rest = text[start + len(key) + 2:]
    end = rest.find('"')
    if end < 0:
        raise InputError(f"{key} value has no closing quote", path=path)
    return rest[:end]


def _extent_at(text: str, start: int, path: str, number: int) -> Extent | None:
    """The extent QEMU parses at line ``number``, None for lines it skips, InputError for invalid ones.

    As in QEMU, a blank line before an extent line yields that extent a second time:

    >>> len(parse_descriptor('createType="vmfs"\\n\\nRW 8 VMFS "a.vmdk"\\n').extents)
    2
    """
    match = _EXTENT_LINE.match(text, start)
    if not match:
        return None
    line = text[start:].split("\n", 1)[0] or match.group(0).strip()
    access, sectors_text, kind, name, offset_text = match.groups()
    if access != "RW":
        return None   # QEMU opens only RW extents; RDONLY and NOACCESS lines are skipped
    if kind == "FLAT":
        valid = offset_text is not None and int(offset_text) >= 0
    else:
        valid = offset_text is None
    if not valid:
        raise InputError(f"invalid extent line: {line.strip()}", path=path, line=number)
    sectors = min(int(sectors_text), 2**63 - 1)   # strtoll saturates
    if sectors <= 0 or kind not in EXTENT_TYPES:
        return None
    return Extent(file=name, kind=kind, sectors=sectors, offset_sectors=int(offset_text or 0))


def read_vmdk(image: ImageFile, head: bytes) -> ImageInfo:
    """Read the VMDK ``image`` whose first sector is ``head`` (sparse header or descriptor text)."""
    if head.startswith((VMDK4_MAGIC, VMDK3_MAGIC)):
        return _read_sparse(image, head.ljust(SECTOR, b"\x00"))   # QEMU reads past the end as zeros
    text = _descriptor_text(image, head)
    return _read_descriptor_file(image, parse_descriptor(text, image.path))


@dataclass(frozen=True)
class _Sparse:
    """The parts of a sparse header that matter here."""

    version: int
    sectors: int
    compressed: bool = False
    descriptor_only: bool = False  # KDMV with capacity 0 carrying a descriptor (ESX style)


def _read_sparse(image: ImageFile, head: bytes) -> ImageInfo:
    """A monolithicSparse, streamOptimized or COWD file opened directly."""
    sparse = _sparse_header(image, head)
    if sparse.descriptor_only:
        raise InputError("sparse file holding only a descriptor (capacity 0) is not supported", path=image.path)
    text = image.read_at(SECTOR, DESC_SIZE).decode("utf-8", "replace")
    descriptor = parse_descriptor(text, image.path)
    if descriptor.cid is None or descriptor.parent_cid is None:
        raise InputError("sparse VMDK without an embedded descriptor (no CID): it looks like one extent "
                         "of a split image; use the descriptor file that lists it", path=image.path)
    create_type = "streamOptimized" if sparse.compressed else "monolithicSparse"
    extent = Extent(file=os.path.basename(image.path), kind="", sectors=sparse.sectors, compressed=sparse.compressed)
    return _info(image, descriptor, create_type, (extent,), (image.path,), sparse.version)


def _sparse_header(image: ImageFile, head: bytes) -> _Sparse:
    if head.startswith(VMDK3_MAGIC):
        return _cowd_header(image, head)
    return _kdmv_header(image, head)


def _kdmv_header(image: ImageFile, head: bytes) -> _Sparse:
    """QEMU's vmdk_open_vmdk4 checks, in its order."""
    capacity, descriptor_offset = struct.unpack_from("<Q", head, 12)[0], struct.unpack_from("<Q", head, 28)[0]
    if capacity == 0 and descriptor_offset:
        return _Sparse(version=struct.unpack_from("<I", head, 4)[0], sectors=0, descriptor_only=True)
    if struct.unpack_from("<Q", head, 56)[0] == GD_AT_END:
        head = _stream_footer(image)
    (version, flags, capacity, granularity, _desc_offset, _desc_size, gtes_per_gt, rgd_offset, gd_offset,
     grain_offset) = struct.unpack_from("<IIQQQQIQQQ", head, 4)
    compressed = struct.unpack_from("<H", head, 77)[0] == COMPRESSION_DEFLATE
    if version > 3:
        raise InputError(f"unsupported VMDK version {version}", path=image.path)
    if gtes_per_gt > 512:
        raise InputError("L2 table size too big", path=image.path)
    l1_entry_sectors = (gtes_per_gt * granularity) & 0xFFFFFFFF
    if l1_entry_sectors == 0:
        raise InputError("L1 entry size is invalid", path=image.path)
    l1_size = ((capacity + l1_entry_sectors - 1) // l1_entry_sectors) & 0xFFFFFFFF
    if -(-image.size // SECTOR) < grain_offset:
        raise InputError(f"file truncated, expecting at least {grain_offset * SECTOR} bytes", path=image.path)
    _check_tables(granularity, l1_size, image.path)
    _check_readable(gd_offset, l1_size * 4, "grain directory", image.path)
    if flags & FLAG_REDUNDANT_GD:
        _check_readable(rgd_offset, l1_size * 4, "redundant grain directory", image.path)
    return _Sparse(version=version, sectors=capacity, compressed=compressed)


def _check_readable(offset_sectors: int, length: int, what: str, path: str) -> None:
    """A table QEMU reads when it opens the image must lie where QEMU can address it.

    QEMU keeps the byte offset in a signed 64-bit integer and refuses requests beyond
    2^63 - 2^30 with an I/O error, so a wild offset makes the image unopenable.
    """
    offset = (offset_sectors << 9) & 0xFFFFFFFFFFFFFFFF
    if offset >= 2**63 or offset > MAX_REQUEST_END or length > MAX_REQUEST_END - offset:
        raise InputError(f"{what} offset {offset_sectors} is out of range", path=path)


def _stream_footer(image: ImageFile) -> bytes:
    """The footer header of a streamOptimized file: marker, header sector, end-of-stream marker."""
    start = -(-image.size // SECTOR) * SECTOR - 3 * SECTOR
    footer = image.read_at(start, 3 * SECTOR) if start >= 0 else b""
    if len(footer) == 3 * SECTOR:
        marker_size, marker_type = struct.unpack_from("<II", footer, 8)
        eos_value, eos_size, eos_type = struct.unpack_from("<QII", footer, 2 * SECTOR)
        if (footer[SECTOR:SECTOR + 4] == VMDK4_MAGIC and marker_size == 0 and marker_type == MARKER_FOOTER
                and eos_value == 0 and eos_size == 0 and eos_type == MARKER_END_OF_STREAM):
            return footer[SECTOR:2 * SECTOR]
    raise InputError("invalid streamOptimized footer (the header says it is at the end of the file)",
                     path=image.path)


def _cowd_header(image: ImageFile, head: bytes) -> _Sparse:
    """An old VMware 3 / ESX ``COWD`` sparse header (QEMU's vmdk_open_vmfs_sparse)."""
    version, _flags, sectors, granularity, _l1_offset, l1_size = struct.unpack_from("<IIIIII", head, 4)
    _check_tables(granularity, l1_size, image.path)
    return _Sparse(version=version, sectors=sectors)


def _check_tables(granularity: int, l1_size: int, path: str) -> None:
    """QEMU's vmdk_add_extent limits."""
    if granularity > 0x200000:
        raise InputError("invalid granularity, image may be corrupt", path=path)
    if l1_size > 32 * 1024 * 1024:
        raise InputError("L1 size too big", path=path)


def _descriptor_text(image: ImageFile, head: bytes) -> str:
    """A descriptor file's text (``head`` is its start, already read); one larger than the read
    budget is refused."""
    data = head + image.read_at(len(head), image.budget - image.bytes_read)
    if b"\x00" not in data and image.size > len(data):
        raise InputError(f"VMDK descriptor larger than {image.budget // 1024} KiB", path=image.path)
    return data.decode("utf-8", "replace")


def _read_descriptor_file(image: ImageFile, descriptor: Descriptor) -> ImageInfo:
    create_type = descriptor.create_type
    if create_type is None:
        raise InputError("invalid VMDK descriptor: no createType", path=image.path)
    if create_type in RAW_DEVICE_TYPES:
        raise UnsafeInputError(f"createType '{create_type}' maps a host device into the guest", path=image.path)
    if create_type not in DESCRIPTOR_TYPES:
        raise InputError(f"unsupported VMDK image type '{create_type}'", path=image.path)
    extents: list[Extent] = []
    files = [image.path]
    notes = []
    for extent in descriptor.extents:
        extent_path = sibling(image.path, extent.file, "extent")
        if extent.kind not in ("FLAT", "VMFS"):
            extent = _sparse_extent(extent, extent_path, image.log)
        elif os.path.getsize(extent_path) < (extent.offset_sectors + extent.sectors) * SECTOR:
            notes.append(f"flat extent '{extent.file}' is shorter than the descriptor says: "
                         "the guest reads zeros past its end")
        if extent_path not in files:
            files.append(extent_path)
        extents.append(extent)
    if not extents:
        raise InputError("VMDK descriptor lists no RW extent QEMU can open", path=image.path)
    if descriptor.cid is None or descriptor.parent_cid is None:
        raise InputError("invalid VMDK descriptor: no CID or parentCID line", path=image.path)
    return _info(image, descriptor, create_type, tuple(extents), tuple(files), None, notes)


def _sparse_extent(extent: Extent, extent_path: str, log: list[int]) -> Extent:
    """A SPARSE/VMFSSPARSE/SESPARSE extent: its size comes from its own header, as in QEMU."""
    with ImageFile(extent_path, log=log) as part:
        head = part.read_at(0, SECTOR).ljust(SECTOR, b"\x00")
        if extent.kind == "SESPARSE":
            sectors = _sesparse_sectors(head, extent_path)
            return Extent(file=extent.file, kind=extent.kind, sectors=sectors)
        if not head.startswith((VMDK4_MAGIC, VMDK3_MAGIC)):
            raise InputError(f"extent '{extent.file}' is not a sparse VMDK", path=extent_path)
        sparse = _sparse_header(part, head)
    if sparse.descriptor_only:
        raise InputError(f"extent '{extent.file}' is itself a descriptor", path=extent_path)
    return Extent(file=extent.file, kind=extent.kind, sectors=sparse.sectors, compressed=sparse.compressed)


def _sesparse_sectors(head: bytes, path: str) -> int:
    """Capacity of an ESXi seSparse extent (QEMU's strict const-header checks)."""
    if len(head) < 48:
        raise InputError("truncated seSparse header", path=path)
    magic, version, capacity, grain_size, table_size, flags = struct.unpack_from("<QQQQQQ", head, 0)
    if magic != SESPARSE_MAGIC or version != 0x0000000200000001:
        raise InputError("not a supported seSparse extent", path=path)
    if grain_size != 8 or table_size != 64 or flags != 0:
        raise InputError("unsupported seSparse grain or table size", path=path)
    return capacity


def _info(image: ImageFile, descriptor: Descriptor, create_type: str, extents: tuple[Extent, ...],
          files: tuple[str, ...], version: int | None, notes: list[str] | None = None) -> ImageInfo:
    sectors = sum(extent.sectors for extent in extents)
    values = descriptor.values
    notes = list(notes or ())
    if version == 3 and not any(extent.compressed for extent in extents):
        notes.append("VMDK version 3 (changed block tracking): QEMU opens it read-only only")
    return ImageInfo(
        path=image.path,
        format="vmdk",
        virtual_size=check_size(sectors * SECTOR, image.path),
        version=version,
        create_type=create_type,
        adapter_type=values.get("ddb.adapterType"),
        hw_version=values.get("ddb.virtualHWVersion"),
        cid=descriptor.cid,
        parent_cid=descriptor.parent_cid,
        backing=descriptor.parent_hint,
        backing_format="vmdk" if descriptor.parent_hint is not None else None,
        extents=extents,
        files=files,
        notes=tuple(notes),
    )

