"""libvirt domain XML -> :class:`VMSpec`.

Reads what libvirt's own parser reads, with libvirt's defaults: memory units and
KiB rounding (``virDomainParseMemory``), NUMA-derived memory, ``<vcpu>`` maximum and
current, the disk bus inferred from the target name, disks in libvirt's order, MAC
addresses and NIC models in libvirt's spelling, firmware auto-selection and pflash
loaders.  Nothing here touches a hypervisor; the runner decides what of the user's
XML may reach one.
"""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

from lxml import etree

from ..errors import InputError
from ..spec import Console, Disk, KernelBoot, Nic, SharedFolder, VMSpec
from ..units import UnitError, libvirt_bytes
from ..xmlsafe import parse_file

RNG_PATH = Path("/usr/share/libvirt/schemas/domain.rng")

# libvirt: when <target bus> is absent the bus follows the target name's prefix.
_BUS_BY_PREFIX = (("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"), ("xvd", "xen"), ("ubd", "uml"))

# libvirt's virDiskNameParse: the prefixes a target name's drive letters follow.
_DRIVE_PREFIXES = ("fd", "hd", "vd", "sd", "xvd", "ubd")

# virDomainNetModel: the models libvirt knows, matched case-insensitively.
_NIC_MODELS = {model.lower(): model for model in (
    "netfront", "rtl8139", "virtio", "e1000", "e1000e", "igb", "virtio-transitional",
    "virtio-non-transitional", "usb-net", "spapr-vlan", "lan9118", "scm91c111", "vlance", "vmxnet",
    "vmxnet2", "vmxnet3", "Am79C970A", "Am79C973", "82540EM", "82545EM", "82543GC")}

# libvirt reads vCPU counts into an unsigned int.
_MAX_UINT = 2**32 - 1

# VIR_DOMAIN_MEMORY_PARAM_UNLIMITED: libvirt refuses a memory size above this many KiB.
_MAX_MEMORY_KIB = 2**53 - 1

# Where each libvirt disk type keeps its source.
_DISK_SOURCE_ATTR = {"file": "file", "block": "dev", "dir": "dir", "vhostuser": "path"}


def load(path: str | Path, *, validate: bool = False, **options: Any) -> VMSpec:
    """Read the domain XML at ``path``; with ``validate``, check it against libvirt's RelaxNG first.

    Options of other formats (an OVF ``profile`` ...) are refused when given, not ignored.
    """
    given = sorted(name for name, value in options.items() if value)
    if given:
        raise InputError(f"{', '.join(given)}: only for OVF appliances, and this is libvirt domain XML", path=path)
    root = parse_file(path)
    if validate:
        validate_rng(root, path)
    return spec_from_domain(root, path)


def spec_from_domain(root: etree._Element, path: str | Path) -> VMSpec:
    """Build the spec from a parsed ``<domain>`` element."""
    if root.tag != "domain":
        raise InputError(f"root element is <{etree.QName(root).localname}>, expected a libvirt <domain>",
                         path=path, line=root.sourceline)
    warnings: list[str] = []
    top = _first_children(root)
    name = _text(top.get("name"))
    if not name:
        name = Path(path).stem
        warnings.append(f"<name> missing; using '{name}'")
    os_parts = _first_children(top.get("os"))
    os_type = os_parts.get("type")
    devices = top.get("devices")
    vcpus, vcpus_current = _vcpus(top, path)
    interfaces = _children(devices, "interface")
    nics = tuple(_nic(i) for i in interfaces)
    warnings += _mac_warnings(interfaces, nics)
    return VMSpec(
        source_format="libvirt",
        name=name,
        vcpus=vcpus,
        vcpus_current=vcpus_current,
        memory_bytes=_memory_bytes(root, top, devices, path),
        firmware=_firmware(top.get("os"), os_parts.get("loader")),
        hypervisor=root.get("type"),
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        kernel_boot=_kernel_boot(os_parts),
        disks=_libvirt_disk_order(_children(devices, "disk"), path),
        nics=nics,
        shared_folders=tuple(_shared_folder(f) for f in _children(devices, "filesystem")),
        consoles=tuple(_console(c) for c in _children(devices, "serial", "console")),
        extras=_extras(os_type, top.get("cpu")),
        source_path=str(path),
        warnings=tuple(warnings),
    )


def _first_children(element: etree._Element | None) -> dict[Any, etree._Element]:
    """The first child of each tag, found in one pass (a find() per tag costs more)."""
    first: dict[Any, etree._Element] = {}
    if element is not None:
        for child in element:
            first.setdefault(child.tag, child)
    return first


def _text(element: etree._Element | None) -> str:
    """The stripped text of ``element``; empty when it is absent or empty."""
    return (element.text or "").strip() if element is not None else ""


def _children(element: etree._Element | None, *tags: str) -> list[etree._Element]:
    """The children with the given tags, in document order."""
    return list(element.iterchildren(*tags)) if element is not None else []


def _scaled(element: etree._Element, path: str | Path, attribute: str | None = None) -> int:
    """A libvirt memory size (element text or ``attribute``) in bytes, rounded up to whole
    KiB and bounded as libvirt's virDomainParseMemory does."""
    text = element.get(attribute) if attribute else element.text
    try:
        size = libvirt_bytes(text or "", element.get("unit"))
    except UnitError as exc:
        raise InputError(f"<{element.tag}>: {exc}", path=path, line=element.sourceline) from None
    kib = -(-size // 1024)
    if kib > _MAX_MEMORY_KIB:
        raise InputError(f"<{element.tag}>: {size} bytes is more than libvirt accepts ({_MAX_MEMORY_KIB} KiB)",
                         path=path, line=element.sourceline)
    return kib * 1024


def _memory_bytes(root: etree._Element, top: dict[Any, etree._Element], devices: etree._Element | None,
                  path: str | Path) -> int:
    """Total guest memory as libvirt computes it (virDomainDefPostParseMemory).

    ``<memory>`` when given; otherwise the sum of the NUMA cells plus hot-plugged
    ``<memory>`` devices.
    """
    memory = top.get("memory")
    total = _scaled(memory, path) if _text(memory) else 0
    if total:
        return total
    cells = top["cpu"].findall("numa/cell") if "cpu" in top else []
    numa = sum(_scaled(cell, path, "memory") for cell in cells if cell.get("memory"))
    if numa:
        hotplug = sum(_scaled(size, path) for dev in _children(devices, "memory")
                      for size in dev.findall("target/size"))
        return numa + hotplug
    raise InputError("no guest memory: give <memory> or NUMA cells with memory",
                     path=path, line=root.sourceline)


def _vcpus(top: dict[Any, etree._Element], path: str | Path) -> tuple[int, int | None]:
    """``(maximum, current)`` vCPUs; current is None when it equals the maximum.

    The maximum is ``<vcpu>``; the current count its ``current`` attribute or, as
    libvirt does, the number of ``<vcpus><vcpu enabled='yes'>`` entries when listed.
    """
    vcpu = top.get("vcpu")
    listed = _children(top.get("vcpus"), "vcpu")
    enabled = sum(1 for v in listed if v.get("enabled", "yes") == "yes") if listed else None
    if not _text(vcpu):
        maximum = len(listed) or 1
        return maximum, (enabled if enabled not in (None, maximum) else None)
    maximum = _positive_int(vcpu.text, vcpu, path)
    current_text = vcpu.get("current")
    current = _positive_int(current_text, vcpu, path) if current_text else enabled
    return maximum, (current if current != maximum else None)


def _positive_int(text: str | None, element: etree._Element, path: str | Path) -> int:
    """A vCPU count as libvirt reads it: a whole number from 1 to an unsigned int's maximum."""
    value = (text or "").strip()
    digits = value.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()) or int(digits) == 0:
        raise InputError(f"<{element.tag}>: '{value}' is not a positive whole number",
                         path=path, line=element.sourceline)
    if int(digits) > _MAX_UINT:
        raise InputError(f"<{element.tag}>: {value} is more than libvirt accepts ({_MAX_UINT})",
                         path=path, line=element.sourceline)
    return int(digits)


def _firmware(os_element: etree._Element | None, loader: etree._Element | None) -> str:
    """``efi`` for ``<os firmware='efi'>`` or a pflash loader, else ``bios``."""
    if os_element is not None and os_element.get("firmware") == "efi":
        return "efi"
    if loader is not None and loader.get("type") == "pflash":
        return "efi"
    return "bios"


def _kernel_boot(os_parts: dict[Any, etree._Element]) -> KernelBoot | None:
    kernel = _text(os_parts.get("kernel"))
    if not kernel:
        return None
    cmdline = os_parts.get("cmdline")
    return KernelBoot(kernel=kernel, initrd=_text(os_parts.get("initrd")) or None,
                      cmdline=cmdline.text if cmdline is not None else None)


def _libvirt_disk_order(elements: list[etree._Element], path: str | Path) -> tuple[Disk, ...]:
    """The disks in the order libvirt keeps them (virDomainDiskInsertPreAlloced).

    Each disk goes before the first disk of its bus with a higher drive index, or
    right after the last disk of its bus; a disk whose bus no earlier disk shares goes
    last.  "Bus" is the ``<target bus>`` as written (absent counts as its own bus),
    which is why ``hda`` without a bus and ``hdb`` with ``bus='ide'`` do not sort.
    That order decides which disk is "the first" (what ``<boot dev='hd'>`` boots).
    """
    placed: list[tuple[str | None, int, Disk]] = []
    for element in elements:
        parts = _first_children(element)
        disk = _disk(element, parts, path)
        bus = parts["target"].get("bus") if "target" in parts else None
        index = drive_index(disk.target)
        at = None
        for position in range(len(placed) - 1, -1, -1):
            other_bus, other_index, _ = placed[position]
            if other_bus != bus:
                continue
            if other_index > index:
                at = position
            elif at is None:
                at = position + 1
        placed.insert(len(placed) if at is None else at, (bus, index, disk))
    return tuple(disk for _, _, disk in placed)


def drive_index(target_dev: str | None) -> int:
    """libvirt's virDiskNameToIndex: ``vda`` is 0, ``sdz`` 25, ``hdaa`` 26; -1 if not a drive name.

    >>> [drive_index(name) for name in ("vda", "sdz", "hdaa", "xvdb2", "nvme0n1", None)]
    [0, 25, 26, 1, -1, -1]
    """
    if not target_dev:
        return -1
    prefix = next((p for p in _DRIVE_PREFIXES if target_dev.startswith(p)), None)
    if prefix is None:
        return -1
    rest = target_dev[len(prefix):]
    letters = len(rest) - len(rest.lstrip("abcdefghijklmnopqrstuvwxyz"))
    partition = rest[letters:]
    if letters == 0 or not (partition == "" or (partition.isascii() and partition.isdigit())):
        return -1
    index = 0
    for position, letter in enumerate(rest[:letters]):
        index = (index + (1 if position else 0)) * 26 + ord(letter) - ord("a")
    return index


def _disk(element: etree._Element, parts: dict[Any, etree._Element], path: str | Path) -> Disk:
    """One ``<disk>``; ``parts`` are its first children by tag."""
    device = element.get("device", "disk")
    if device not in ("disk", "cdrom", "floppy", "lun"):
        raise InputError(f"<disk device='{device}'> is not disk, cdrom, floppy or lun",
                         path=path, line=element.sourceline)
    source_type = element.get("type", "file")
    target = parts.get("target")
    target_dev = target.get("dev") if target is not None else None
    driver = parts.get("driver")
    source_element = parts.get("source")
    if source_element is None and device in ("cdrom", "floppy"):
        source_type = "file"  # libvirt keeps a removable drive without <source> as type='file'
    return Disk(
        device=device,
        bus=_disk_bus(device, target, target_dev),
        format=driver.get("type") if driver is not None else None,
        source=_disk_source(source_element, source_type),
        source_type=source_type,
        readonly="readonly" in parts,
        target=target_dev,
        backing=_backing_source(parts.get("backingStore")),
    )


def _disk_bus(device: str, target: etree._Element | None, target_dev: str | None) -> str:
    bus = target.get("bus") if target is not None else None
    if bus:
        return bus
    if device == "floppy":
        return "fdc"
    for prefix, inferred in _BUS_BY_PREFIX:
        if target_dev and target_dev.startswith(prefix):
            return inferred
    return "ide"


def _disk_source(source: etree._Element | None, source_type: str) -> str | None:
    """A one-string description of a disk source of any libvirt type."""
    if source is None:
        return None
    if source_type in _DISK_SOURCE_ATTR:
        return source.get(_DISK_SOURCE_ATTR[source_type])
    if source_type == "network":
        host = source.find("host")
        where = ""
        if host is not None:
            where = host.get("name") or host.get("socket") or ""
            if host.get("port"):
                where += f":{host.get('port')}"
        return f"{source.get('protocol', 'network')}://{where}/{source.get('name', '')}"
    if source_type == "volume":
        return f"{source.get('pool', '')}/{source.get('volume', '')}"
    if source_type == "nvme":
        address = source.find("address")
        pci = ":".join(address.get(k, "") for k in ("domain", "bus", "slot", "function")) if address is not None else ""
        return f"nvme://{pci}/{source.get('namespace', '1')}"
    return None


def _backing_source(backing: etree._Element | None) -> str | None:
    if backing is None or backing.find("source") is None:
        return None
    return _disk_source(backing.find("source"), backing.get("type", "file")) or "(unnamed)"


def _nic(element: etree._Element) -> Nic:
    kind = element.get("type", "user")
    parts = _first_children(element)
    source = parts.get("source")
    network = None
    if source is not None:
        network = (source.get("network") or source.get("bridge") or source.get("dev")
                   or source.get("name") or source.get("path") or source.get("address"))
    mac, model, link = parts.get("mac"), parts.get("model"), parts.get("link")
    return Nic(
        model=_nic_model(model.get("type")) if model is not None else None,
        mac=_mac(mac.get("address")) if mac is not None else None,
        network=network,
        network_kind=kind,
        link="down" if link is not None and link.get("state") == "down" else "up",
    )


def _mac(text: str | None) -> str | None:
    """A MAC address read as libvirt's virMacAddrParse does (six groups of one or two hex
    digits) and written as libvirt writes it; None when there is none or it is malformed.

    >>> _mac("52:54:0:A:b:1"), _mac("52:54:00:12:34:5g"), _mac(None)
    ('52:54:00:0a:0b:01', None, None)
    """
    groups = (text or "").rstrip().split(":")
    if len(groups) != 6 or not all(0 < len(g) <= 2 and all(c in string.hexdigits for c in g) for g in groups):
        return None
    return ":".join(f"{int(group, 16):02x}" for group in groups)


def _mac_warnings(interfaces: list[etree._Element], nics: tuple[Nic, ...]) -> list[str]:
    """What libvirt would refuse about the NICs' MAC addresses (the runner's check refuses it too)."""
    warnings = []
    for element, nic in zip(interfaces, nics, strict=True):
        mac = element.find("mac")
        if mac is not None and nic.mac is None:
            warnings.append(f"line {mac.sourceline}: <mac address='{mac.get('address')}'> is not a MAC "
                            "address; libvirt refuses it (the spec leaves this NIC's MAC unset)")
        elif nic.mac and int(nic.mac[:2], 16) & 1:
            warnings.append(f"NIC MAC {nic.mac} is a multicast address; libvirt refuses it for a NIC")
    return warnings


def _nic_model(model: str | None) -> str | None:
    """libvirt matches its known NIC models in any case and writes them its own way.

    >>> _nic_model("ViRtIo"), _nic_model("82540em"), _nic_model("my-model")
    ('virtio', '82540EM', 'my-model')
    """
    return _NIC_MODELS.get(model.lower(), model) if model else None


def _shared_folder(element: etree._Element) -> SharedFolder:
    source = element.find("source")
    target = element.find("target")
    driver = element.find("driver")
    source_text = ""
    if source is not None:
        source_text = (source.get("dir") or source.get("file") or source.get("name")
                       or source.get("socket") or source.get("dev") or "")
    driver_type = driver.get("type") if driver is not None else None
    return SharedFolder(
        source=source_text,
        target=target.get("dir", "") if target is not None else "",
        driver={"path": "9p"}.get(driver_type or "", driver_type),
        readonly=element.find("readonly") is not None,
    )


def _console(element: etree._Element) -> Console:
    target = element.find("target")
    return Console(kind=element.tag, target=target.get("type") if target is not None else None)


def _extras(os_type: etree._Element | None, cpu: etree._Element | None) -> dict[str, str]:
    """Hypervisor-specific wishes worth carrying: the OS type, the CPU model and mode."""
    extras: dict[str, str] = {}
    if _text(os_type):
        extras["os_type"] = _text(os_type)
    if cpu is not None:
        if cpu.get("mode"):
            extras["cpu_mode"] = cpu.get("mode")
        model = cpu.findtext("model")
        if model:
            extras["cpu_model"] = model.strip()
    return extras


def validate_rng(root: etree._Element, path: str | Path, rng_path: Path | None = None) -> None:
    """Validate against libvirt's installed RelaxNG schema (compiled once per process).

    libxml2 blames a whole section ("Element domain failed to validate content" at
    ``/domain/devices``); the one-line error names the first device of that section
    which fails on its own, with its line.
    """
    rng_path = rng_path or RNG_PATH
    if not rng_path.exists():
        raise InputError(f"cannot validate: libvirt's RelaxNG schema {rng_path} is not installed "
                         "(Debian package libvirt0)", path=path)
    schema = _relaxng(str(rng_path))
    if schema.validate(root):
        return
    error = schema.error_log.last_error
    culprit = _first_invalid_child(schema, root, error.path)
    if culprit is not None:
        raise InputError(f"not valid against {rng_path.name}: <{culprit.tag}> in <{culprit.getparent().tag}> "
                         "does not match libvirt's schema", path=path, line=culprit.sourceline)
    where = f" at {error.path}" if error.path else ""
    raise InputError(f"not valid against {rng_path.name}{where}: {error.message}", path=path, line=error.line)


def _first_invalid_child(schema: etree.RelaxNG, root: etree._Element, section_path: str | None
                         ) -> etree._Element | None:
    """The first child of the section at ``section_path`` that fails the schema as its only child."""
    if not section_path:
        return None
    trial = copy.deepcopy(root)
    try:
        sections = trial.getroottree().xpath(section_path)
    except etree.XPathError:
        return None
    if not sections or not isinstance(sections[0], etree._Element) or sections[0] is trial:
        return None
    section = sections[0]
    children = list(section)
    for child in children:
        section.remove(child)
    for child in children:
        section.append(child)
        if not schema.validate(trial):
            return child
        section.remove(child)
    return None


_RNG_CACHE: dict[str, etree.RelaxNG] = {}


def _relaxng(rng_path: str) -> etree.RelaxNG:
    if rng_path not in _RNG_CACHE:
        _RNG_CACHE[rng_path] = etree.RelaxNG(etree.parse(rng_path))
    return _RNG_CACHE[rng_path]
