"""A folder -> an ISO 9660 image (Joliet + Rock Ridge) for a cdrom, built at submit time.

``condor_*_submit --cdrom-from DIR`` calls :func:`build_iso`.  The image carries the
folder's files under their own names (Rock Ridge for Linux guests, Joliet for Windows
guests; the plain ISO 9660 names are upper-case stand-ins) and a volume label, by
default the folder's name (a folder named ``cidata`` makes a cloud-init NoCloud seed).
The same folder contents give the same bytes: every timestamp is :data:`FIXED_TIME`,
entries are sorted, modes are normalized (read-only, executable bits kept).

Refused: a missing, non-folder or empty folder, special files (FIFOs, sockets,
devices) and symlinks that point outside the folder or nowhere.  A symlink that stays
inside becomes a Rock Ridge symlink (Joliet has none: Windows guests do not see it).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import threading
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import InputError, UnsafeInputError

FIXED_TIME = 946684800  # 2000-01-01T00:00:00Z, every timestamp on the image
LABEL_MAX = 16  # the Joliet volume descriptor holds 16 UCS-2 characters
_JOLIET_MAX_BYTES = 64  # pycdlib counts a Joliet name's UTF-8 bytes
_ISO_NAME_MAX = 30  # ISO 9660 levels 2 and 3: name + '.' + extension, without ';1'
_FILE_MODE, _EXEC_MODE, _DIR_MODE = 0o100444, 0o100555, 0o040555
_CLOCK_LOCK = threading.Lock()


@dataclass(frozen=True)
class Entry:
    """One thing on the image: ``path`` relative to the folder (POSIX), its kind and,
    for a symlink, its target as stored (relative)."""

    path: str
    kind: str  # "dir" | "file" | "link"
    source: str
    executable: bool = False
    link_target: str | None = None


@dataclass(frozen=True)
class BuiltIso:
    """The image written: where, its label, how many files and bytes."""

    path: Path
    label: str
    files: int
    size_bytes: int


def plan_isos(folders: Iterable[Path], output_dir: Path) -> dict[Path, Path]:
    """Where each folder's ISO goes: ``OUTPUT_DIR/NAME.iso``, numbered when names repeat.

    >>> plan_isos([Path("a/cidata"), Path("b/cidata"), Path("my data")], Path("/out"))
    {PosixPath('a/cidata'): PosixPath('/out/cidata.iso'), PosixPath('b/cidata'): PosixPath('/out/cidata-2.iso'), \
PosixPath('my data'): PosixPath('/out/my_data.iso')}
    """
    plan: dict[Path, Path] = {}
    for folder in folders:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(os.path.abspath(folder)).name).strip("._") or "cdrom"
        name, number = f"{stem}.iso", 1
        while output_dir / name in plan.values():
            number += 1
            name = f"{stem}-{number}.iso"
        plan[folder] = output_dir / name
    return plan


def volume_label(name: str) -> str:
    """A volume label from a folder name: printable ASCII letters, digits, ``_`` and ``-``,
    at most 16 characters; case is kept (cloud-init looks for ``cidata``).

    >>> volume_label("cidata"), volume_label("my data (2026)!"), volume_label("ééé")
    ('cidata', 'my_data__2026__', 'CDROM')
    """
    label = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:LABEL_MAX]
    return label if label.strip("_") else "CDROM"


def iso9660_name(name: str, is_dir: bool, taken: set[str]) -> str:
    """The plain ISO 9660 name for ``name`` (level 3: d-characters, 30 at most), unique
    among ``taken`` (which it joins); files get their ``;1`` version.

    >>> taken = set()
    >>> iso9660_name("user-data", False, taken), iso9660_name("User_Data", False, taken)
    ('USER_DATA.;1', 'USER_DATA_2.;1')
    >>> iso9660_name("archive.tar.gz", False, taken), iso9660_name("sub.dir", True, taken)
    ('ARCHIVE_TAR.GZ;1', 'SUB_DIR')
    """
    stem, _, extension = name.rpartition(".") if ("." in name and not is_dir) else (name, "", "")
    stem, extension = _d_characters(stem or extension), _d_characters(extension)[:8] if stem else ""
    base = stem[: _ISO_NAME_MAX - len(extension) - 1]
    candidate, number = base, 1
    while _full_iso_name(candidate, extension, is_dir) in taken:
        number += 1
        suffix = f"_{number}"
        candidate = base[: _ISO_NAME_MAX - len(extension) - 1 - len(suffix)] + suffix
    full = _full_iso_name(candidate, extension, is_dir)
    taken.add(full)
    return full


def _d_characters(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def _full_iso_name(stem: str, extension: str, is_dir: bool) -> str:
    return stem if is_dir else f"{stem}.{extension};1"


def joliet_name(name: str, taken: set[str]) -> str:
    """The Joliet name: the real one, Windows-forbidden and control characters replaced, cut to what
    Joliet holds, unique among ``taken`` (compared without case, as Windows does).

    >>> taken = set()
    >>> joliet_name("a:b.txt", taken), joliet_name("A_b.txt", taken), joliet_name("new\\nline", taken)
    ('a_b.txt', 'A_b_2.txt', 'new_line')
    """
    clean = re.sub(r'[\x00-\x1f*/:;?\\<>|"]', "_", name)
    stem, dot, extension = clean.rpartition(".") if "." in clean.lstrip(".") else (clean, "", "")
    candidate, number = _fit(stem, dot + extension), 1
    while candidate.lower() in taken:
        number += 1
        candidate = _fit(stem, f"_{number}{dot}{extension}")
    taken.add(candidate.lower())
    return candidate


def _fit(stem: str, tail: str) -> str:
    """``stem + tail`` cut by whole characters, the stem first, to Joliet's byte budget."""
    while len((stem + tail).encode()) > _JOLIET_MAX_BYTES:
        stem, tail = (stem[:-1], tail) if stem else (stem, tail[:-1])
    return stem + tail


def scan_folder(folder: Path) -> tuple[Entry, ...]:
    """Every entry under ``folder``, parents before children, names sorted; refuses what
    cannot go on a cdrom (see the module docstring)."""
    if not folder.exists():
        raise InputError("--cdrom-from: folder not found", path=folder)
    if not folder.is_dir():
        raise InputError("--cdrom-from: not a folder (give the folder whose files go on the cdrom)", path=folder)
    root = Path(os.path.realpath(folder))
    entries: list[Entry] = []
    _scan(root, root, "", entries)
    if not entries:
        raise InputError("--cdrom-from: the folder is empty: nothing to put on the cdrom", path=folder)
    return tuple(entries)


def _scan(root: Path, directory: Path, prefix: str, entries: list[Entry]) -> None:
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise InputError(f"--cdrom-from: cannot read the folder: {error.strerror}", path=directory) from None
    for name in names:
        path = directory / name
        relative = f"{prefix}{name}"
        try:
            name.encode()
        except UnicodeEncodeError:
            raise InputError("--cdrom-from: the name is not valid UTF-8; rename it", path=path) from None
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            entries.append(_link(root, path, relative))
        elif stat.S_ISDIR(info.st_mode):
            entries.append(Entry(relative, "dir", str(path)))
            _scan(root, path, relative + "/", entries)
        elif stat.S_ISREG(info.st_mode):
            entries.append(Entry(relative, "file", str(path), executable=bool(info.st_mode & 0o111)))
        else:
            raise UnsafeInputError(f"--cdrom-from: {_kind(info.st_mode)} cannot go on a cdrom: only files, "
                                   "folders and symlinks inside the folder", path=path)


def _link(root: Path, path: Path, relative: str) -> Entry:
    target = Path(os.path.realpath(path))
    if target != root and root not in target.parents:
        raise UnsafeInputError(f"--cdrom-from: the symlink points outside the folder (to {target})", path=path)
    if not target.exists():
        raise InputError("--cdrom-from: the symlink points to nothing", path=path)
    stored = os.path.relpath(target, os.path.realpath(path.parent))
    return Entry(relative, "link", str(path), link_target=PurePosixPath(stored).as_posix())


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISCHR, "a character device")):
        if test(mode):
            return word
    return "a special file"


def build_iso(folder: Path, output: Path, label: str | None = None) -> BuiltIso:
    """Write the ISO image of ``folder`` to ``output`` (replacing it); ``label`` defaults to
    :func:`volume_label` of the folder's name."""
    import pycdlib

    entries = scan_folder(folder)
    label = label if label is not None else volume_label(Path(os.path.realpath(folder)).name)
    if not label or len(label) > LABEL_MAX:
        raise InputError(f"a volume label has 1 to {LABEL_MAX} characters: '{label}'")
    iso = pycdlib.PyCdlib()
    with _fixed_clock():
        iso.new(interchange_level=3, vol_ident=label, app_ident_str="condor_vmsubmit", joliet=3,
                rock_ridge="1.09")
        try:
            _add_entries(iso, entries)
            iso.write(str(output))
        except (OSError, pycdlib.pycdlibexception.PyCdlibException) as error:
            output.unlink(missing_ok=True)
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise InputError(f"cannot build the ISO image of {folder}: {reason}",
                             path=getattr(error, "filename", None) or output) from None
        finally:
            iso.close()
    files = sum(1 for entry in entries if entry.kind == "file")
    return BuiltIso(output, label, files, output.stat().st_size)


def _add_entries(iso, entries: tuple[Entry, ...]) -> None:  # type: ignore[no-untyped-def]
    """Each entry under its Rock Ridge name, its ISO 9660 stand-in and (not symlinks) its Joliet name."""
    iso_paths, joliet_paths = {"": ""}, {"": ""}
    iso_taken: dict[str, set[str]] = {}
    joliet_taken: dict[str, set[str]] = {}
    for entry in entries:
        parent, _, name = entry.path.rpartition("/")
        is_dir = entry.kind == "dir"
        iso_path = iso_paths[entry.path] = (
            f"{iso_paths[parent]}/{iso9660_name(name, is_dir, iso_taken.setdefault(parent, set()))}")
        if entry.kind == "link":
            iso.add_symlink(iso_path, rr_symlink_name=name, rr_path=entry.link_target)
            continue
        joliet_path = joliet_paths[entry.path] = (
            f"{joliet_paths[parent]}/{joliet_name(name, joliet_taken.setdefault(parent, set()))}")
        if is_dir:
            iso.add_directory(iso_path, rr_name=name, joliet_path=joliet_path, file_mode=_DIR_MODE)
        else:
            iso.add_file(entry.source, iso_path, rr_name=name, joliet_path=joliet_path,
                         file_mode=_EXEC_MODE if entry.executable else _FILE_MODE)


@contextlib.contextmanager
def _fixed_clock() -> Iterator[None]:
    """pycdlib stamps every record with ``time.time()`` in local time: while it builds, its
    modules see a clock stopped at :data:`FIXED_TIME` in UTC, so the output is reproducible."""
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.time = lambda: float(FIXED_TIME)
    clock.localtime = time.gmtime
    modules = [sys.modules[name] for name in ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates")]
    with _CLOCK_LOCK:
        saved = [module.time for module in modules]
        for module in modules:
            module.time = clock
        try:
            yield
        finally:
            for module, original in zip(modules, saved, strict=True):
                module.time = original
