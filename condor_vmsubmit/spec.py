"""The normalized VM spec: the one language every other part of condor_vmsubmit speaks.

Format adapters produce a :class:`VMSpec`; the translator, the policy code and the
execute-side runner consume it.  Its JSON form (:meth:`VMSpec.to_json`) travels with
the job; ``schemas/vmspec.schema.json`` describes it and the keys listed in
docs/design.md are stable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

SPEC_VERSION = 1

SourceFormat = Literal["libvirt", "ovf", "vmdk"]
Firmware = Literal["bios", "efi"]
DiskDevice = Literal["disk", "cdrom", "floppy", "lun"]
LinkState = Literal["up", "down"]


@dataclass(frozen=True)
class Disk:
    """A disk, cdrom, floppy or lun as the guest sees it.

    ``source`` is the image the source names (a path, an OVF href, a volume or
    network description for non-file disks); ``source_type`` is libvirt's disk type
    (file, block, network, volume, dir, nvme, vhostuser) and ``file`` for OVF/VMDK.
    """

    device: DiskDevice = "disk"
    bus: str | None = None
    format: str | None = None
    source: str | None = None
    source_type: str = "file"
    readonly: bool = False
    capacity_bytes: int | None = None
    target: str | None = None
    backing: str | None = None


@dataclass(frozen=True)
class Nic:
    """A network interface.  ``network_kind`` is how it attaches (libvirt's
    interface type: user, network, bridge, direct, ethernet ...); ``network`` the
    name of that network or bridge when there is one."""

    model: str | None = None
    mac: str | None = None
    network: str | None = None
    network_kind: str = "user"
    link: LinkState = "up"


@dataclass(frozen=True)
class SharedFolder:
    """A host folder shared into the guest (libvirt ``<filesystem>``)."""

    source: str
    target: str
    driver: str | None = None  # "9p" (path), "virtiofs", or None for the host's choice
    readonly: bool = False


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot: a kernel image, an optional initrd and command line."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class Console:
    """A serial port or console the source asks for (``kind`` serial or console,
    ``target`` the guest-side type such as isa-serial or virtio)."""

    kind: str = "serial"
    target: str | None = None


@dataclass(frozen=True)
class VMSpec:
    """A virtual machine, independent of the format it was described in."""

    source_format: SourceFormat
    name: str
    vcpus: int
    memory_bytes: int
    vcpus_current: int | None = None
    firmware: Firmware = "bios"
    hypervisor: str | None = None
    arch: str | None = None
    machine: str | None = None
    kernel_boot: KernelBoot | None = None
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    shared_folders: tuple[SharedFolder, ...] = ()
    consoles: tuple[Console, ...] = ()
    extras: Mapping[str, str] = field(default_factory=dict, hash=False)
    source_path: str | None = None
    warnings: tuple[str, ...] = ()

    def with_warning(self, message: str) -> VMSpec:
        """A copy with one more warning."""
        return replace(self, warnings=self.warnings + (message,))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts and lists, stable keys)."""
        data = _lists(asdict(self))
        data["spec_version"] = SPEC_VERSION
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VMSpec:
        """Rebuild a spec from :meth:`to_dict` output (unknown keys are ignored; a newer
        ``spec_version`` is refused with :class:`SpecVersionError`)."""
        check_version(data.get("spec_version", SPEC_VERSION))
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["disks"] = tuple(_build(Disk, d) for d in data.get("disks", ()))
        values["nics"] = tuple(_build(Nic, n) for n in data.get("nics", ()))
        values["shared_folders"] = tuple(_build(SharedFolder, s) for s in data.get("shared_folders", ()))
        values["consoles"] = tuple(_build(Console, c) for c in data.get("consoles", ()))
        values["warnings"] = tuple(data.get("warnings", ()))
        values["extras"] = dict(data.get("extras", {}))
        if data.get("kernel_boot"):
            values["kernel_boot"] = _build(KernelBoot, data["kernel_boot"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> VMSpec:
        return cls.from_dict(json.loads(text))

    def disks_of(self, device: str) -> tuple[Disk, ...]:
        """The disks whose device is ``device`` (disk, cdrom, floppy, lun)."""
        return tuple(disk for disk in self.disks if disk.device == device)


class SpecVersionError(ValueError):
    """The JSON form is of a version this code does not read."""


def check_version(version: Any) -> None:
    """Refuse a ``spec_version`` other than one this code reads (1 to :data:`SPEC_VERSION`).

    >>> check_version(2)
    Traceback (most recent call last):
    ...
    condor_vmsubmit.spec.SpecVersionError: spec_version 2 is newer than this condor_vmsubmit reads (1):
    install the submit side's version or newer here
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecVersionError(f"spec_version {version!r} is not a version of the VM spec")
    if version > SPEC_VERSION:
        raise SpecVersionError(f"spec_version {version} is newer than this condor_vmsubmit reads "
                               f"({SPEC_VERSION}): install the submit side's version or newer here")


def _lists(value: Any) -> Any:
    """``value`` with tuples turned into lists and mappings into dicts, as JSON has them."""
    if isinstance(value, (tuple, list)):
        return [_lists(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _lists(item) for key, item in value.items()}
    return value


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in known})
