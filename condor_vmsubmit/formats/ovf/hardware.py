"""VirtualHardwareSection Items -> vCPUs, memory, disks, NICs and firmware for one profile.

Items sharing an ``InstanceID`` are one device whose values may differ per
DeploymentOption profile (``ovf:configuration``): an Item without the attribute is in
every profile, one with it only in those it lists and overrides the generic values
there.  Of ``ovf:bound`` min/normal/max variants only the normal one counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ...errors import InputError
from ...spec import Disk, Nic
from ...units import MAX_BYTES, UnitError, programmatic_multiplier
from .envelope import DiskDef, FileRef, attr, children, kind, local

# DSP1041 / CIM_ResourceAllocationSettingData.ResourceType values we read.
CPU, MEMORY, IDE, SCSI, FC, ISCSI, ETHERNET = 3, 4, 5, 6, 7, 8, 10
FLOPPY, CDROM, DVD, DISK, OTHER_STORAGE, LOGICAL_DISK = 14, 15, 16, 17, 20, 31
ITEM_KINDS = ("Item", "StorageItem", "EthernetPortItem")

# QEMU NIC models for the ResourceSubType names appliances list (vendor order kept, virtio first).
_NIC_MODELS = {
    "virtio": "virtio", "virtio-net": "virtio", "e1000": "e1000", "e1000e": "e1000e",
    "vmxnet3": "vmxnet3", "pcnet32": "pcnet", "pcnet": "pcnet", "flexible": "pcnet",
    "rtl8139": "rtl8139", "ne2k_pci": "ne2k_pci",
}
_MAC = re.compile(r"^[0-9a-fA-F]{2}([-:]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")


@dataclass(frozen=True)
class Device:
    """One hardware device as the chosen profile sees it: child values by local name."""

    instance: str
    values: dict[str, str]
    line: int | None

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    @property
    def resource_type(self) -> int | None:
        raw = self.get("ResourceType") or ""
        return int(raw) if raw.isdigit() else None

    @property
    def subtypes(self) -> list[str]:
        return [s for s in re.split(r"[\s,]+", self.get("ResourceSubType") or "") if s]


def profile_devices(section: etree._Element, profile: str | None) -> list[Device]:
    """The devices of ``section`` in ``profile`` (None: only Items without a configuration)."""
    grouped: dict[str, list[etree._Element]] = {}
    for number, element in enumerate(e for e in section if isinstance(e.tag, str) and kind(e) in ITEM_KINDS):
        if (attr(element, "bound") or "normal") not in ("normal", ""):
            continue
        instance = _child_text(element, "InstanceID") or _child_text(element, "InstanceId") or f"#{number}"
        grouped.setdefault(instance, []).append(element)
    devices = []
    for instance, elements in grouped.items():
        generic = [e for e in elements if attr(e, "configuration") is None]
        specific = [e for e in elements
                    if profile is not None and profile in (attr(e, "configuration") or "").split()]
        if not generic and not specific:
            continue
        values: dict[str, str] = {}
        for element in generic + specific:
            values.update(_values(element))
        devices.append(Device(instance, values, (generic + specific)[0].sourceline))
    return devices


def _values(element: etree._Element) -> dict[str, str]:
    values: dict[str, str] = {}
    for item_child in element:
        if isinstance(item_child.tag, str):
            name = local(item_child.tag)
            value = (item_child.text or "").strip()
            if value and name not in values:
                values[name] = value
    return values


def _child_text(element: etree._Element, name: str) -> str | None:
    for item_child in element:
        if isinstance(item_child.tag, str) and local(item_child.tag) == name:
            return (item_child.text or "").strip() or None
    return None


def vcpus(devices: list[Device], path: str | Path, warnings: list[str]) -> int:
    """VirtualQuantity of the processor Item (1, with a warning, when there is none)."""
    cpus = [d for d in devices if d.resource_type == CPU]
    if not cpus:
        warnings.append("no processor Item; assuming 1 vCPU")
        return 1
    if len(cpus) > 1:
        warnings.append(f"{len(cpus)} processor Items; using the first")
    raw = cpus[0].get("VirtualQuantity") or "1"
    if not raw.isdigit() or int(raw) == 0:
        raise InputError(f"processor Item: VirtualQuantity '{raw}' is not a positive whole number",
                         path=path, line=cpus[0].line)
    return int(raw)


def memory_bytes(devices: list[Device], path: str | Path, warnings: list[str]) -> int:
    """VirtualQuantity x AllocationUnits of the memory Item; a missing unit means MiB (warned).

    Without a memory Item the answer is 0 (warned): the descriptor leaves it to the deployer.
    """
    items = [d for d in devices if d.resource_type == MEMORY]
    if not items:
        warnings.append("no memory Item (ResourceType 4): memory is 0 until the submit gives one")
        return 0
    if len(items) > 1:
        warnings.append(f"{len(items)} memory Items; using the first")
    item = items[0]
    raw = item.get("VirtualQuantity") or ""
    if not raw.isdigit() or int(raw) == 0:
        raise InputError(f"memory Item: VirtualQuantity '{raw}' is not a positive whole number",
                         path=path, line=item.line)
    units = item.get("AllocationUnits")
    if units is None:
        warnings.append("memory Item has no AllocationUnits; assuming MiB as VMware and virt-v2v do")
        units = "byte * 2^20"
    try:
        total = int(raw) * programmatic_multiplier(units)
    except UnitError as exc:
        raise InputError(f"memory Item: {exc}", path=path, line=item.line) from None
    if total > MAX_BYTES:
        raise InputError(f"memory Item: {raw} x '{units}' overflows 64 bits", path=path, line=item.line)
    return total


def controller_buses(devices: list[Device]) -> dict[str, str]:
    """The bus of every storage controller, by InstanceID."""
    buses: dict[str, str] = {}
    for device in devices:
        kind_ = device.resource_type
        subtypes = " ".join(device.subtypes).lower()
        if kind_ == IDE:
            buses[device.instance] = "ide"
        elif kind_ in (SCSI, FC, ISCSI):
            buses[device.instance] = "scsi"
        elif kind_ == OTHER_STORAGE or "ahci" in subtypes or "nvme" in subtypes:
            buses[device.instance] = "nvme" if "nvme" in subtypes else "sata"
    return buses


def disks(devices: list[Device], disk_defs: dict[str, DiskDef], files: dict[str, FileRef],
          warnings: list[str]) -> tuple[Disk, ...]:
    """Hard disks, CD/DVD drives and floppies in document order, with their controller bus."""
    buses = controller_buses(devices)
    found = []
    for device in devices:
        kind_ = device.resource_type
        if kind_ in (DISK, LOGICAL_DISK):
            found.append(_disk(device, "disk", buses, disk_defs, files, warnings))
        elif kind_ in (CDROM, DVD):
            found.append(_disk(device, "cdrom", buses, disk_defs, files, warnings))
        elif kind_ == FLOPPY:
            found.append(_disk(device, "floppy", buses, disk_defs, files, warnings))
    sources = [d.source for d in found if d.device == "disk" and d.source]
    for shared in sorted({s for s in sources if sources.count(s) > 1}):
        warnings.append(f"several disks use the same file '{shared}'")
    return tuple(found)


def _disk(device: Device, what: str, buses: dict[str, str], disk_defs: dict[str, DiskDef],
          files: dict[str, FileRef], warnings: list[str]) -> Disk:
    source = capacity = disk_format = None
    host = device.get("HostResource")
    if host:
        scheme, _, ident = host.removeprefix("ovf:").lstrip("/").partition("/")
        if scheme == "disk" and ident in disk_defs:
            definition = disk_defs[ident]
            capacity = definition.capacity_bytes
            disk_format = disk_format_name(definition.format_uri)
            if definition.file_id is not None:
                if definition.file_id in files:
                    source = files[definition.file_id].href
                else:
                    warnings.append(f"Disk '{ident}' names file '{definition.file_id}', "
                                    "which References does not list")
        elif scheme == "file" and ident in files:
            source = files[ident].href
            disk_format = "raw" if source.lower().endswith((".iso", ".img", ".flp")) else None
        else:
            warnings.append(f"{what} Item {device.instance}: HostResource '{host}' names nothing "
                            "in DiskSection or References")
    if what == "disk" and source is None and capacity is None:
        warnings.append(f"disk Item {device.instance} has neither a file nor a capacity")
    default_bus = {"cdrom": "ide", "floppy": "fdc"}.get(what)
    return Disk(
        device=what,  # type: ignore[arg-type]
        bus=buses.get(device.get("Parent") or "", default_bus),
        format=disk_format,
        source=source,
        readonly=what == "cdrom",
        capacity_bytes=capacity,
    )


def disk_format_name(uri: str | None) -> str | None:
    """qemu's name for an OVF disk format URI.

    >>> disk_format_name("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")
    'vmdk'
    >>> disk_format_name("http://www.gnome.org/~markmc/qcow-image-format.html")
    'qcow2'
    """
    if not uri:
        return None
    lowered = uri.lower()
    for marker, name in (("vmdk", "vmdk"), ("qcow", "qcow2"), ("vhdx", "vhdx"), ("vhd", "vpc"),
                         ("bb676673", "vpc"), ("ecma-119", "raw"), ("iso", "raw"), ("raw", "raw"),
                         ("wiki/byte", "raw"), ("vdi", "vdi")):
        if marker in lowered:
            return name
    return None


def nics(devices: list[Device], networks: list[str], warnings: list[str]) -> tuple[Nic, ...]:
    """Ethernet adapters: model, MAC, logical network, link up unless not connected at power-on."""
    found = []
    for device in devices:
        if device.resource_type != ETHERNET:
            continue
        network = device.get("Connection")
        if network and networks and network not in networks:
            warnings.append(f"NIC {device.instance} connects to '{network}', which NetworkSection does not declare")
        found.append(Nic(
            model=_nic_model(device, warnings),
            mac=_mac(device.get("Address"), device, warnings),
            network=network,
            network_kind="network" if network else "user",
            link="down" if (device.get("AutomaticAllocation") or "").lower() == "false" else "up",
        ))
    return tuple(found)


def _nic_model(device: Device, warnings: list[str]) -> str | None:
    names = [s.lower() for s in device.subtypes]
    models = [_NIC_MODELS[n] for n in names if n in _NIC_MODELS]
    if "virtio" in models:
        return "virtio"
    if models:
        return models[0]
    if names:
        warnings.append(f"NIC {device.instance}: no QEMU model for '{' '.join(device.subtypes)}'; "
                        "the default model is used")
    return None


def _mac(raw: str | None, device: Device, warnings: list[str]) -> str | None:
    if not raw:
        return None
    if not _MAC.match(raw):
        warnings.append(f"NIC {device.instance}: '{raw}' is not a MAC address; ignored")
        return None
    digits = re.sub(r"[-:]", "", raw).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def firmware(system: etree._Element) -> str:
    """``efi`` when VMware's ``vmw:Config firmware`` (read as virt-v2v reads it) or VirtualBox's
    ``vbox:Machine/Hardware/Firmware type`` says so, else ``bios``."""
    for element in system.iter():
        if not isinstance(element.tag, str):
            continue
        name = local(element.tag)
        if name == "Config" and attr(element, "key") == "firmware":
            return "efi" if (attr(element, "value") or "").lower() == "efi" else "bios"
        if name == "Firmware" and (element.get("type") or "").upper().startswith("EFI"):
            return "efi"
    return "bios"


def hardware_section(system: etree._Element, path: str | Path, warnings: list[str]) -> etree._Element:
    """The system's VirtualHardwareSection (the first, with a warning, when there are several)."""
    sections = children(system, "VirtualHardwareSection")
    if not sections:
        raise InputError(f"VirtualSystem '{attr(system, 'id')}' has no VirtualHardwareSection",
                         path=path, line=system.sourceline)
    if len(sections) > 1:
        warnings.append(f"{len(sections)} VirtualHardwareSections; using the first")
    return sections[0]
