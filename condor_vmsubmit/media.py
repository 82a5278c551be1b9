"""Removable media: cdrom and floppy images added to a spec (``--cdrom``, ``--floppy``, ``--cdrom-from``).

:func:`add_removable` is pure: it gives each image a read-only raw drive with a bus the
guest can reach and a target of its own.  :func:`check_image` reads an image's headers
first, so a qcow2 or VMDK handed over as an ISO is refused at submit time.

Buses: a cdrom goes on the bus the spec's disks already use when that is SATA or SCSI
(or SATA on a q35 machine, which has no IDE), else on IDE (``hdc`` first, where PCs
keep their cdrom; IDE holds four drives, further cdroms go on SATA).  Floppies go on
the floppy controller, ``fda`` and ``fdb``: a PC has two floppy drives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .errors import InputError
from .spec import Disk, VMSpec

IDE_TARGETS = ("hdc", "hdd", "hda", "hdb")
FLOPPY_TARGETS = ("fda", "fdb")
_SD_TARGETS = tuple(f"sd{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")
_TARGET_BUS = {"hd": "ide", "fd": "fdc"}  # libvirt's inference for targets without a bus
# The names the runner gives disks without a target, by bus (domain/render.py; no bus: IDE).
_NAMES_BY_BUS = {"ide": tuple(f"hd{c}" for c in "abcd"), "sata": _SD_TARGETS, "scsi": _SD_TARGETS,
                 "usb": _SD_TARGETS, "fdc": FLOPPY_TARGETS}


def add_removable(spec: VMSpec, cdroms: Iterable[str] = (), floppies: Iterable[str] = ()) -> VMSpec:
    """``spec`` with one read-only raw cdrom per ISO and one floppy per image, after its disks.

    >>> spec = VMSpec("vmdk", "vm", 1, 2**30, disks=(Disk(bus="virtio", format="raw", source="/d.img"),))
    >>> [(d.device, d.bus, d.target) for d in add_removable(spec, ["/a.iso", "/b.iso"], ["/f.img"]).disks]
    [('disk', 'virtio', None), ('cdrom', 'ide', 'hdc'), ('cdrom', 'ide', 'hdd'), ('floppy', 'fdc', 'fda')]
    >>> sata = replace(spec, disks=(Disk(bus="sata", target="sda"), Disk(bus="sata")))
    >>> [(d.bus, d.target) for d in add_removable(sata, ["/a.iso"]).disks[2:]]
    [('sata', 'sdc')]
    """
    cdroms, floppies = list(cdroms), list(floppies)
    disks = list(spec.disks)
    if len(spec.disks_of("floppy")) + len(floppies) > len(FLOPPY_TARGETS):
        raise InputError(f"a PC has {len(FLOPPY_TARGETS)} floppy drives: {len(spec.disks_of('floppy'))} in the "
                         f"VM and {len(floppies)} more asked for", path=spec.source_path)
    taken = {disk.target for disk in disks if disk.target}
    for disk in disks:  # keep free the names the runner will give the disks without one
        names = _NAMES_BY_BUS.get(disk.bus or "ide", ())
        if not disk.target and any(name not in taken for name in names):
            _free(tuple(sorted(names)), taken)
    preferred = _cdrom_bus(spec)
    for path in cdroms:
        bus = preferred
        if bus == "ide" and sum(1 for d in disks if _bus(d) == "ide") >= len(IDE_TARGETS):
            bus = "sata"
        disks.append(_drive("cdrom", bus, path, _free(IDE_TARGETS if bus == "ide" else _SD_TARGETS, taken)))
    for path in floppies:
        disks.append(_drive("floppy", "fdc", path, _free(FLOPPY_TARGETS, taken)))
    return replace(spec, disks=tuple(disks))


def _cdrom_bus(spec: VMSpec) -> str:
    buses = {_bus(disk) for disk in spec.disks}
    for bus in ("sata", "scsi"):
        if bus in buses:
            return bus
    return "sata" if spec.machine and "q35" in spec.machine else "ide"


def _bus(disk: Disk) -> str | None:
    """The disk's bus, or the one libvirt infers from its target name."""
    return disk.bus or (_TARGET_BUS.get(disk.target[:2]) if disk.target else None)


def _free(names: tuple[str, ...], taken: set[str]) -> str:
    name = next((n for n in names if n not in taken), None)
    if name is None:
        raise InputError(f"no free drive name left among {names[0]}..{names[-1]}")
    taken.add(name)
    return name


def _drive(device: str, bus: str, path: str, target: str) -> Disk:
    return Disk(device=device, bus=bus, format="raw", source=path,  # type: ignore[arg-type]
                readonly=True, target=target)


def check_image(path: str | Path, device: str) -> str:
    """The absolute path of a cdrom or floppy image, after its headers say it is a plain (raw)
    image; ISO 9660 images and floppy images both are."""
    from .images.diskimage import read_image

    info = read_image(path)
    if info.format != "raw":
        kind = "an ISO image" if device == "cdrom" else "a raw floppy image"
        raise InputError(f"a {device} must be {kind}, this is a {info.format} image", path=path)
    return os.path.abspath(path)


def with_media(spec: VMSpec, *, cdroms: Iterable[Path] = (), floppies: Iterable[Path] = (),
               cdrom_from: Iterable[Path] = (), output_dir: Path, transfer_disks: bool = True,
               ) -> tuple[VMSpec, dict[Path, Path]]:
    """What the ``--cdrom``, ``--floppy`` and ``--cdrom-from`` options make of ``spec``: the images
    checked, the folders scanned (nothing written yet), the drives added; and the ISOs to build,
    folder -> image in ``output_dir`` (:func:`condor_vmsubmit.isobuild.build_iso` writes them)."""
    from .isobuild import plan_isos, scan_folder

    folders = tuple(cdrom_from)
    if folders and not transfer_disks:
        raise InputError("--cdrom-from builds its ISO on this machine, so the ISO must travel with the job: "
                         "it cannot be combined with --no-transfer-disks")
    for folder in folders:
        scan_folder(folder)
    plan = plan_isos(folders, output_dir)
    images = [check_image(path, "cdrom") for path in cdroms] + [str(path) for path in plan.values()]
    spec = add_removable(spec, images, [check_image(path, "floppy") for path in floppies])
    return spec, plan
