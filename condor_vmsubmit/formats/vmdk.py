"""A plain disk image (VMDK of any subformat, qcow2 or raw) -> :class:`VMSpec`.

A disk image says nothing about the machine around it, so the spec takes the user's
choices (``cpus``, ``memory``, ``hypervisor``, ``firmware``, extra disks, cdroms, NICs) and
otherwise these defaults, each stated as a warning so ``inspect`` and the dry-run show it:

* 1 vCPU, 1 GiB of memory, BIOS firmware, any hypervisor;
* the disk's bus from the VMDK's ``ddb.adapterType`` (ide -> ide; lsilogic, buslogic,
  legacyESX, lsisas1068, pvscsi -> scsi, the controller model in ``extras``; none -> ide, as
  QEMU writes it), virtio for qcow2 and raw;
* one user-mode NIC, e1000 for a VMDK (what VMware guests carry drivers for), virtio otherwise.

The format found in the image's headers is written into every disk, never left to probing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..images.diskimage import read_image
from ..images.imageio import ImageInfo
from ..media import add_removable, check_image
from ..spec import Disk, Nic, VMSpec
from ..units import UnitError, human_bytes, parse_size

DEFAULT_VCPUS = 1
DEFAULT_MEMORY_BYTES = 1024**3
DEFAULT_FIRMWARE = "bios"

# ddb.adapterType (lower case) -> (bus, libvirt SCSI controller model)
_ADAPTERS = {
    "ide": ("ide", None),
    "lsilogic": ("scsi", "lsilogic"),
    "buslogic": ("scsi", "buslogic"),
    "legacyesx": ("scsi", "buslogic"),
    "lsisas1068": ("scsi", "lsisas1068"),
    "pvscsi": ("scsi", "vmpvscsi"),
}
_NIC_KINDS = ("user", "network", "bridge")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def load(path: str | Path, **options: Any) -> VMSpec:
    """Build the spec around the image at ``path``; see :func:`build` for the options."""
    return build(path, **options)[0]


def build(
    path: str | Path,
    *,
    validate: bool = False,
    cpus: int | None = None,
    memory: int | str | None = None,
    hypervisor: str | None = None,
    firmware: str | None = None,
    extra_disks: Iterable[str | Path] = (),
    cdroms: Iterable[str | Path] = (),
    nics: Iterable[str | Nic] = (),
    allow_backing: bool = False,
    **_options: Any,
) -> tuple[VMSpec, tuple[str, ...]]:
    """The spec, and the files the job needs beyond its disks' sources (extents, backing files).

    ``memory`` is bytes or a size such as ``"2GiB"``; ``nics`` are :class:`Nic` or strings for
    :func:`parse_nic`; ``hypervisor`` ``"any"`` (or None) leaves the choice to the pool.
    Disk sources are made absolute (the user named them relative to where they stand).
    Disk images have no schema, so ``validate`` adds nothing.
    """
    warnings: list[str] = []
    images = [read_image(p, allow_backing=allow_backing) for p in (path, *extra_disks)]
    disks = [_disk(info, warnings) for info in images]
    main = images[0]
    for info in images:
        warnings += _chain_notes(info)
    asked = [n if isinstance(n, Nic) else parse_nic(n) for n in nics]
    spec_nics = tuple(n for n in asked if n is not None)
    if not asked:
        model = "e1000" if main.format == "vmdk" else "virtio"
        spec_nics = (Nic(model=model, network_kind="user"),)
        warnings.append(f"default network: one user-mode {model} NIC (--nic none for no network)")
    if cpus is None:
        warnings.append(f"a disk image does not say how many CPUs: using {DEFAULT_VCPUS} vCPU (--cpus)")
    if memory is None:
        warnings.append(f"a disk image does not say how much memory: using {human_bytes(DEFAULT_MEMORY_BYTES)} "
                        "(--memory)")
    if firmware is None:
        warnings.append("a disk image does not say how it boots: using BIOS firmware (--firmware efi for UEFI)")
    spec = VMSpec(
        source_format="vmdk",
        name=_name(path),
        vcpus=_cpus(cpus, path),
        memory_bytes=_memory(memory, path),
        firmware=_firmware(firmware, path),
        hypervisor=None if hypervisor in (None, "", "any") else hypervisor,
        disks=tuple(disks),
        nics=spec_nics,
        extras=_extras(main),
        source_path=str(path),
        warnings=tuple(warnings),
    )
    spec = add_removable(spec, [check_image(iso, "cdrom") for iso in cdroms])
    sources = {info.path for info in images}
    files = tuple(dict.fromkeys(f for info in images for f in info.job_files if f not in sources))
    return spec, files


def parse_nic(text: str) -> Nic | None:
    """A NIC from ``KIND[:NAME][,model=M][,mac=MAC][,link=up|down]``; None for ``none`` (no network).

    >>> parse_nic("network:default,model=virtio,mac=52:54:00:AB:cd:01,link=down")
    Nic(model='virtio', mac='52:54:00:ab:cd:01', network='default', network_kind='network', link='down')
    >>> parse_nic("user")
    Nic(model=None, mac=None, network=None, network_kind='user', link='up')
    >>> parse_nic("none") is None
    True
    """
    head, *options = [part.strip() for part in text.split(",")]
    kind, _, network = head.partition(":")
    if kind == "none" and not options and not network:
        return None
    if kind not in _NIC_KINDS or (kind != "user" and not network) or (kind == "user" and network):
        raise InputError(f"--nic '{text}': start with user, network:NAME, bridge:NAME or none")
    values: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("model", "mac", "link") or not value:
            raise InputError(f"--nic '{text}': '{option}' is not model=, mac= or link=")
        values[key] = value
    mac = values.get("mac", "").lower() or None
    if mac and not _MAC.match(mac):
        raise InputError(f"--nic '{text}': '{mac}' is not a MAC address such as 52:54:00:12:34:56")
    link = values.get("link", "up")
    if link not in ("up", "down"):
        raise InputError(f"--nic '{text}': link is up or down")
    return Nic(model=values.get("model"), mac=mac, network=network or None, network_kind=kind,
               link=link)  # type: ignore[arg-type]


def bus_for(info: ImageInfo) -> tuple[str, str | None]:
    """``(bus, SCSI controller model or None)`` for an image: its VMDK adapter type, else virtio.

    >>> bus_for(ImageInfo(path="d.vmdk", format="vmdk", virtual_size=0, adapter_type="legacyESX"))
    ('scsi', 'buslogic')
    >>> bus_for(ImageInfo(path="d.qcow2", format="qcow2", virtual_size=0))
    ('virtio', None)
    """
    if info.format != "vmdk":
        return "virtio", None
    return _ADAPTERS.get((info.adapter_type or "ide").lower(), ("ide", None))


def _disk(info: ImageInfo, warnings: list[str]) -> Disk:
    if info.virtual_size == 0:
        raise InputError("the image has no data extents (virtual size 0)", path=info.path)
    if info.encrypted:
        raise InputError(f"encrypted {info.format} image: the job has no way to get its key", path=info.path)
    if info.format == "vmdk" and info.version == 3 and not any(e.compressed for e in info.extents):
        raise InputError("VMDK version 3 (changed block tracking) opens only read-only in QEMU, so the guest "
                         "could not write to it: convert it first (qemu-img convert -O qcow2)", path=info.path)
    bus, _model = bus_for(info)
    if info.format == "raw" and Path(info.path).suffix.lower() == ".vmdk":
        warnings.append(f"{info.path}: no VMDK header or descriptor: QEMU reads it as a raw disk, and so will the job")
    if info.format == "vmdk" and (info.adapter_type or "ide").lower() not in _ADAPTERS:
        warnings.append(f"{info.path}: unknown adapter type '{info.adapter_type}': using an IDE bus")
    return Disk(device="disk", bus=bus, format=info.format, source=os.path.abspath(info.path),
                capacity_bytes=info.virtual_size, backing=info.backing if info.parent else None)


def _chain_notes(info: ImageInfo) -> list[str]:
    notes: list[str] = []
    while info is not None:
        notes += [f"{info.path}: {note}" for note in info.notes]
        info = info.parent  # type: ignore[assignment]
    return notes


def _extras(main: ImageInfo) -> dict[str, str]:
    """Image facts for people and for the other parts (all strings)."""
    extras = {"image_format": main.format}
    if main.format == "vmdk":
        extras.update({
            "create_type": main.create_type or "",
            "adapter_type": main.adapter_type or "ide",
            "hw_version": main.hw_version or "",
            "cid": f"{main.cid:08x}" if main.cid is not None else "",
            "parent_cid": f"{main.parent_cid:08x}" if main.parent_cid is not None else "",
            "extents": "; ".join(f"{e.file} ({e.kind or main.create_type}, {e.size_bytes} bytes)"
                                 for e in main.extents),
        })
        _bus, model = bus_for(main)
        if model:
            extras["scsi_controller"] = model
    if main.parent is not None:
        chain, info = [], main
        while info is not None:
            chain.append(f"{Path(info.path).name} ({info.format})")
            info = info.parent  # type: ignore[assignment]
        extras["backing_chain"] = " <- ".join(chain)
    return {key: value for key, value in extras.items() if value}


def _name(path: str | Path) -> str:
    """A domain name from the image's file name.

    >>> _name("/data/My Disk.vmdk")
    'My_Disk'
    """
    stem = Path(path).name.split(".")[0] or "disk"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def _cpus(cpus: int | None, path: str | Path) -> int:
    if cpus is None:
        return DEFAULT_VCPUS
    if int(cpus) < 1:
        raise InputError(f"--cpus {cpus}: need at least one", path=path)
    return int(cpus)


def _memory(memory: int | str | None, path: str | Path) -> int:
    if memory is None:
        return DEFAULT_MEMORY_BYTES
    try:
        size = memory if isinstance(memory, int) else parse_size(str(memory))
    except UnitError as exc:
        raise InputError(f"--memory: {exc}", path=path) from None
    if size < 1024**2:
        raise InputError(f"--memory {memory}: less than 1 MiB", path=path)
    return size


def _firmware(firmware: str | None, path: str | Path) -> str:
    if firmware in (None, DEFAULT_FIRMWARE):
        return DEFAULT_FIRMWARE
    if firmware != "efi":
        raise InputError(f"--firmware {firmware}: bios or efi", path=path)
    return firmware
