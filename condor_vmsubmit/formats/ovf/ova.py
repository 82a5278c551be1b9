"""OVA packages: a tar read by its headers only, members streamed when needed.

Nothing is extracted to find the descriptor: :func:`index` walks the tar headers
(seeking over member data), then :func:`read_member` reads the small descriptor and
manifest, and :func:`open_member` streams a disk when the job needs it.  Members that
could escape a folder (absolute names, ``..``, links, devices) are refused outright;
macOS ``._`` resource forks and folders are skipped.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import InputError, UnsafeInputError
from ...xmlsafe import MAX_XML_BYTES


@dataclass(frozen=True)
class Member:
    """A regular file inside the tar: its normalized name, where its data starts, its size."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class OvaIndex:
    """The members of an OVA by name, and which of them are the descriptor and the manifest."""

    path: str
    members: dict[str, Member]
    descriptor: Member
    manifest: Member | None

    @property
    def base(self) -> str:
        """The folder of the descriptor inside the tar ('' at the top)."""
        return posixpath.dirname(self.descriptor.name)


def index(path: str | Path, fileobj: BinaryIO | None = None) -> OvaIndex:
    """Read the tar headers of ``path`` (or ``fileobj``) and find the descriptor and manifest."""
    members: dict[str, Member] = {}
    try:
        handle = fileobj or open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:
                name = _safe_name(info, path)
                if name is None:
                    continue
                members[name] = Member(name, info.offset_data, info.size)
    except tarfile.TarError as exc:
        raise InputError(f"not a readable OVA (tar) archive: {exc}", path=path) from None
    finally:
        if fileobj is None:
            handle.close()
    descriptors = sorted((m for m in members.values() if m.name.lower().endswith(".ovf")),
                         key=lambda m: (m.name.count("/"), m.offset))
    if not descriptors:
        raise InputError("the OVA holds no .ovf descriptor", path=path)
    descriptor = descriptors[0]
    stem = descriptor.name[:-4]
    manifests = [m for m in members.values() if m.name.lower().endswith(".mf")]
    manifest = members.get(stem + ".mf") or members.get(stem + ".MF") or (manifests[0] if len(manifests) == 1 else None)
    return OvaIndex(str(path), members, descriptor, manifest)


def _safe_name(info: tarfile.TarInfo, path: str | Path) -> str | None:
    """The member's normalized name, None for what we skip; refuses what could escape."""
    raw = info.name
    if raw.startswith(("/", "\\")) or ".." in raw.replace("\\", "/").split("/"):
        raise UnsafeInputError(f"OVA member '{raw}' escapes the archive folder", path=path)
    if info.issym() or info.islnk():
        raise UnsafeInputError(f"OVA member '{raw}' is a link to '{info.linkname}'; links are refused",
                               path=path)
    if info.isdir():
        return None
    if not info.isreg():
        raise UnsafeInputError(f"OVA member '{raw}' is not a regular file", path=path)
    if info.issparse():
        raise InputError(f"OVA member '{raw}' is a GNU sparse file, which OVA does not allow", path=path)
    name = posixpath.normpath(raw.replace("\\", "/"))
    if posixpath.basename(name).startswith("._"):
        return None
    return name


def read_member(ova: OvaIndex, member: Member, limit: int = MAX_XML_BYTES,
                fileobj: BinaryIO | None = None) -> bytes:
    """The whole (small) member: a descriptor or manifest, at most ``limit`` bytes."""
    if member.size > limit:
        raise UnsafeInputError(f"OVA member '{member.name}' is {member.size} bytes, more than "
                               f"the {limit} byte limit", path=ova.path)
    with open_member(ova, member, fileobj) as stream:
        return stream.read()


def open_member(ova: OvaIndex, member: Member, fileobj: BinaryIO | None = None) -> BinaryIO:
    """A read-only stream of exactly the member's bytes."""
    try:
        handle = fileobj or open(ova.path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=ova.path) from None
    return _Window(handle, member.offset, member.size, close_base=fileobj is None)


class _Window(io.RawIOBase):
    """``size`` bytes of ``base`` starting at ``offset``, as a raw stream."""

    def __init__(self, base: BinaryIO, offset: int, size: int, close_base: bool):
        super().__init__()
        self._base, self._left, self._close_base = base, size, close_base
        base.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        view = memoryview(buffer)[: self._left]
        count = self._base.readinto(view) if view.nbytes else 0
        self._left -= count
        return count

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._left
        data = self._base.read(min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._close_base and not self.closed:
            self._base.close()
        super().close()
