"""Pre-deployed (staged) images: base images an admin keeps on execute nodes.

An admin puts images into the folder the ``VMSUBMIT_IMAGE_DIR`` knob names, one file
per image, ``NAME.qcow2`` or ``NAME.raw`` (``NAME.img`` is raw too); discovery
advertises the names in ``VM_IMAGES``.  A job refers to one as the disk source
``staged:NAME`` (what ``--image NAME`` adds to any spec, or what a domain XML writes in
``<source file='staged:NAME'/>``); it matches only nodes listing the name, the image
never travels, and the runner gives the guest a qcow2 overlay in the sandbox whose
read-only backing is the staged file (docs/staged-images.md).

Everything here is pure except :func:`list_images` and :func:`find_image`, which read
the admin's folder (names and headers only).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from .checks import knobs
from .errors import InputError, VMSubmitError
from .spec import Disk, VMSpec

STAGED_PREFIX = "staged:"
# File name suffix of a staged image -> its format.
IMAGE_SUFFIXES = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VIRTIO_TARGETS = tuple(f"vd{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")


class StagedImageError(VMSubmitError):
    """A staged image the job names is not usable on this node."""


def check_name(name: str) -> str:
    """``name`` when it can name a staged image (letters, digits, ``._-``; no paths, no commas).

    >>> check_name("debian-12.4")
    'debian-12.4'
    >>> check_name("../etc/shadow")
    Traceback (most recent call last):
    ...
    condor_vmsubmit.errors.InputError: '../etc/shadow' is not a staged image name
    (letters, digits, '.', '_', '-'; at most 64)
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise InputError(f"'{name}' is not a staged image name (letters, digits, '.', '_', '-'; at most 64)")
    return name


def staged_name(source: str | None) -> str | None:
    """The image name of a ``staged:NAME`` disk source (any folder before it ignored), else None.

    >>> staged_name("staged:debian-12"), staged_name("/home/u/staged:win"), staged_name("disk.qcow2")
    ('debian-12', 'win', None)
    """
    if not source:
        return None
    base = source.rsplit("/", 1)[-1]
    return base[len(STAGED_PREFIX):] if base.startswith(STAGED_PREFIX) else None


def staged_names(spec: VMSpec) -> tuple[str, ...]:
    """The staged images the spec's disks name, in order, each once."""
    names = (staged_name(disk.source) for disk in spec.disks if disk.source_type == "file")
    return tuple(dict.fromkeys(name for name in names if name))


def add_image(spec: VMSpec, name: str) -> VMSpec:
    """``spec`` with the staged image ``name`` as its first disk (virtio, the first free ``vdX``).

    >>> spec = VMSpec("vmdk", "vm", 1, 2**30, disks=(Disk(bus="virtio", format="raw", source="/data.img"),))
    >>> [(d.source, d.target) for d in add_image(spec, "debian-12").disks]
    [('staged:debian-12', 'vda'), ('/data.img', 'vdb')]
    """
    check_name(name)
    taken = {disk.target for disk in spec.disks if disk.target}
    free = (target for target in _VIRTIO_TARGETS if target not in taken)
    base = Disk(bus="virtio", source=STAGED_PREFIX + name, target=next(free))
    # Name the disks the runner would name, so that none takes the staged disk's place.
    others = tuple(disk if disk.target or disk.bus not in (None, "virtio") else replace(disk, target=next(free))
                   for disk in spec.disks)
    return replace(spec, disks=(base,) + others)


def image_overlay_name(name: str) -> str:
    """The overlay's file name in the sandbox (also a checkpoint file: it holds the guest's writes).

    >>> image_overlay_name("debian-12")
    'staged-debian-12.overlay.qcow2'
    """
    return f"staged-{check_name(name)}.overlay.qcow2"


def list_images(folder: str | os.PathLike[str] | None) -> dict[str, Path]:
    """The staged images in ``folder``: name -> file (regular files with a known suffix and a
    usable name; a symlink counts when it resolves inside the folder)."""
    if not folder:
        return {}
    root = Path(folder)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return {}
    real_root = Path(os.path.realpath(root))
    found: dict[str, Path] = {}
    for entry in entries:
        name, suffix = entry.stem, entry.suffix.lower()
        if suffix not in IMAGE_SUFFIXES or not _NAME.fullmatch(name) or name in found:
            continue
        real = Path(os.path.realpath(entry))
        if real_root in real.parents and real.is_file():
            found[name] = real
    return found


def find_image(folder: str | os.PathLike[str] | None, name: str) -> tuple[Path, str]:
    """The staged file for ``name`` and its format, checked from its headers: it must lie in the
    admin's folder (symlinks resolved), be the format its suffix says and have no backing file."""
    from .images.diskimage import read_image

    if not folder:
        raise StagedImageError(f"the job asks for the staged image '{name}' but this node has no "
                               f"image folder ({knobs.IMAGE_DIR.name})")
    path = list_images(folder).get(check_name(name))
    if path is None:
        raise StagedImageError(f"the staged image '{name}' is not in {folder} on this node")
    fmt = IMAGE_SUFFIXES[path.suffix.lower()]
    try:
        info = read_image(path)
    except VMSubmitError as error:
        raise StagedImageError(f"the staged image '{name}' is not usable: {error.message}") from None
    if info.format != fmt:
        raise StagedImageError(f"the staged image '{name}' ({path.name}) is a {info.format} image, not {fmt}")
    return path, fmt


def image_dir_from_config() -> str | None:
    """The admin's image folder (``VMSUBMIT_IMAGE_DIR``), None when unset."""
    folder = knobs.configured(knobs.IMAGE_DIR)
    return str(folder) if folder else None
