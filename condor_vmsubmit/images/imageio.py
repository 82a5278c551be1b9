"""What a disk-image reader returns, how it reads, and which files an image may name.

The readers (:mod:`.vmdkfile`, :mod:`.qcow2`, :mod:`.diskimage`) look only at headers and
descriptors: every read goes through :class:`ImageFile`, which counts the bytes and refuses to
read more than :data:`MAX_HEADER_BYTES` of any one file, so a 2 TiB image costs a few KiB.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UnsafeInputError

SECTOR = 512
# The most any reader may read of one file: headers, descriptors, footers -- never disk data.
MAX_HEADER_BYTES = 64 * 1024
# QEMU's limit: an image whose size in bytes does not fit a signed 64-bit integer cannot be opened.
MAX_IMAGE_BYTES = 2**63 - 1


@dataclass(frozen=True)
class Extent:
    """One piece of a VMDK's virtual disk, as ``qemu-img info`` lists it.

    ``kind`` is the descriptor's extent type (SPARSE, FLAT, VMFS, VMFSSPARSE, SESPARSE) or
    ``""`` for the single extent of a monolithic sparse or streamOptimized file, as QEMU
    reports it; ``file`` is the name as the descriptor writes it.
    """

    file: str
    kind: str
    sectors: int
    offset_sectors: int = 0
    compressed: bool = False

    @property
    def size_bytes(self) -> int:
        return self.sectors * SECTOR


@dataclass(frozen=True)
class ImageInfo:
    """What a disk image's headers say: format, logical size, layout and what it refers to.

    ``files`` are this image's own files (the image and its extents) as paths next to
    ``path``; ``parent`` is the backing image when the caller allowed reading it, and
    :attr:`job_files` then also covers the whole chain.  ``notes`` are facts worth a warning.
    """

    path: str
    format: str
    virtual_size: int
    version: int | None = None
    create_type: str | None = None
    adapter_type: str | None = None
    hw_version: str | None = None
    cid: int | None = None
    parent_cid: int | None = None
    backing: str | None = None
    backing_format: str | None = None
    extents: tuple[Extent, ...] = ()
    files: tuple[str, ...] = ()
    encrypted: bool = False
    bytes_read: int = 0
    notes: tuple[str, ...] = ()
    parent: ImageInfo | None = None

    @property
    def job_files(self) -> tuple[str, ...]:
        """Every file a job using this image needs: its own, then its parent chain's."""
        return self.files + (self.parent.job_files if self.parent else ())


class ImageFile:
    """A regular file opened for header reads: positional, counted, bounded.

    Files opened for one image share a ``log`` of the bytes read from each.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as tmp:
    ...     _ = tmp.write(b"KDMV" + bytes(1020)); tmp.flush()
    ...     with ImageFile(tmp.name) as image:
    ...         (image.read_at(0, 4), len(image.read_at(1000, 100)), image.bytes_read, image.size)
    (b'KDMV', 24, 28, 1024)
    """

    def __init__(self, path: str | Path, budget: int = MAX_HEADER_BYTES, log: list[int] | None = None):
        self.path = str(path)
        self.budget = budget
        self.log = log if log is not None else []
        self.bytes_read = 0
        try:
            # O_NONBLOCK: a FIFO planted as an image must not hang the open; it is refused below.
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=path) from None
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self._fd)
            raise UnsafeInputError("not a regular file (devices and pipes are never used as disks)", path=path)
        self.size = info.st_size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
        length = max(0, min(length, self.size - offset))
        if self.bytes_read + length > self.budget:
            raise InputError(f"image metadata larger than {self.budget // 1024} KiB: not reading disk data",
                             path=self.path)
        data = os.pread(self._fd, length, offset) if length else b""
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        """Close it and add the bytes read to the shared ``log`` (one entry per file)."""
        os.close(self._fd)
        self.log.append(self.bytes_read)

    def __enter__(self) -> ImageFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def sibling(image_path: str | Path, name: str, what: str) -> str:
    """The path of a file an image names (an extent, a backing file), checked to be safe.

    It must be a plain file name next to the image: absolute paths, ``..``, folders and
    protocol-looking names (``nbd:host``, ``json:{…}``) are refused, as is a symbolic link
    leading out of the image's folder.  HTCondor transfers input files into one flat
    sandbox folder, so a sibling is also the only reference that still holds there.

    >>> sibling("disk.vmdk", "/dev/sda", "extent")
    Traceback (most recent call last):
    ...
    condor_vmsubmit.errors.UnsafeInputError: disk.vmdk: extent '/dev/sda' is an absolute path; only files
    next to the image are used
    >>> sibling("disk.vmdk", "../etc/shadow", "backing file").message
    Traceback (most recent call last):
    ...
    condor_vmsubmit.errors.UnsafeInputError: disk.vmdk: backing file '../etc/shadow' escapes the image's folder
    """
    folder = os.path.dirname(str(image_path))
    if not name or "\x00" in name:
        raise InputError(f"{what} has an empty file name", path=image_path)
    if os.path.isabs(name) or name.startswith("\\") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise UnsafeInputError(f"{what} '{name}' is an absolute path; only files next to the image are used",
                               path=image_path)
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeInputError(f"{what} '{name}' escapes the image's folder", path=image_path)
    if ":" in name:
        raise UnsafeInputError(f"{what} '{name}' looks like a QEMU protocol, not a file", path=image_path)
    if len(parts) > 1:
        raise InputError(f"{what} '{name}' is in a sub-folder; HTCondor transfers files flat, "
                         "so keep it next to the image", path=image_path)
    candidate = os.path.join(folder, name)
    if not os.path.lexists(candidate):
        raise InputError(f"{what} '{name}' is missing (looked for {candidate})", path=image_path)
    real_folder = os.path.realpath(folder or ".")
    if os.path.dirname(os.path.realpath(candidate)) != real_folder:
        raise UnsafeInputError(f"{what} '{name}' is a symbolic link leading out of the image's folder",
                               path=image_path)
    if not os.path.isfile(candidate):
        raise UnsafeInputError(f"{what} '{name}' is not a regular file (devices and pipes are never used as disks)",
                               path=image_path)
    return candidate


def check_size(size: int, path: str | Path) -> int:
    """``size`` in bytes, refused as QEMU refuses an image whose size does not fit 63 bits."""
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"virtual size of {size} bytes is too large for QEMU (over 2^63 - 1)", path=path)
    return size
