"""The parts of an OVF envelope every other OVF module needs, read namespace-agnostically.

OVF 0.9 wraps sections as ``<Section xsi:type="ovf:DiskSection_Type">`` and systems as
``<Content xsi:type="ovf:VirtualSystem_Type">``; 1.x and 2.x use ``<DiskSection>`` and
``<VirtualSystem>``.  Vendors also misspell the CIM namespaces of Item children (and
0.9 writes ``InstanceId``), so elements and attributes are matched by local name.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ...errors import InputError, UnsafeInputError
from ...units import MAX_BYTES, UnitError, programmatic_multiplier

ENVELOPE_VERSIONS = {
    "http://www.vmware.com/schema/ovf/1/envelope": "0.9",
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def local(name: str) -> str:
    """The local part of a Clark-notation tag or attribute name.

    >>> local("{http://schemas.dmtf.org/ovf/envelope/1}DiskSection")
    'DiskSection'
    """
    return name.rsplit("}", 1)[-1]


def attr(element: etree._Element, name: str) -> str | None:
    """The attribute ``name`` in any namespace (``ovf:id``, ``vmw:key``, or unqualified)."""
    for key, value in element.attrib.items():
        if local(key) == name:
            return value
    return None


def kind(element: etree._Element) -> str:
    """What an element is: its local name, or for 0.9's ``Section``/``Content`` its xsi:type.

    ``<Section xsi:type="ovf:DiskSection_Type">`` is a ``DiskSection``.
    """
    name = local(element.tag) if isinstance(element.tag, str) else ""
    if name in ("Section", "Content"):
        xsi = element.get(XSI_TYPE) or next(
            (v for k, v in element.attrib.items() if local(k) == "type"), "")
        return xsi.rsplit(":", 1)[-1].removesuffix("_Type") or name
    return name


def children(element: etree._Element, wanted: str) -> list[etree._Element]:
    """The child elements whose :func:`kind` is ``wanted``."""
    return [child for child in element if isinstance(child.tag, str) and kind(child) == wanted]


def child(element: etree._Element, wanted: str) -> etree._Element | None:
    found = children(element, wanted)
    return found[0] if found else None


def text(element: etree._Element | None, wanted: str) -> str | None:
    """Stripped text of the first child named ``wanted`` (any namespace), None when empty."""
    if element is None:
        return None
    found = child(element, wanted)
    value = (found.text or "").strip() if found is not None else ""
    return value or None


def envelope_version(root: etree._Element, path: str | Path) -> str:
    """``0.9``, ``1.x`` or ``2.x`` from the envelope namespace; other namespaces are refused."""
    if local(root.tag) != "Envelope":
        raise InputError(f"root element is <{local(root.tag)}>, not an OVF <Envelope>",
                         path=path, line=root.sourceline)
    namespace = (etree.QName(root).namespace or "").rstrip("/")
    if namespace not in ENVELOPE_VERSIONS:
        raise InputError(f"OVF envelope namespace '{namespace}' is not OVF 0.9, 1.x or 2.x",
                         path=path, line=root.sourceline)
    return ENVELOPE_VERSIONS[namespace]


@dataclass(frozen=True)
class FileRef:
    """A ``References/File``: ``href`` relative to the descriptor, optional size and compression."""

    file_id: str
    href: str
    size: int | None = None
    compression: str | None = None
    chunk_size: int | None = None


@dataclass(frozen=True)
class DiskDef:
    """A ``DiskSection/Disk``: the virtual disk, its file (None for an empty disk) and capacity."""

    disk_id: str
    file_id: str | None
    capacity_bytes: int | None
    format_uri: str | None
    line: int | None = None


def references(root: etree._Element) -> dict[str, FileRef]:
    """The package's files by ``ovf:id``."""
    refs: dict[str, FileRef] = {}
    section = child(root, "References")
    for element in children(section, "File") if section is not None else ():
        file_id, href = attr(element, "id"), attr(element, "href")
        if file_id and href:
            refs[file_id] = FileRef(file_id, href, _int_or_none(attr(element, "size")),
                                    attr(element, "compression") or None,
                                    _int_or_none(attr(element, "chunkSize")))
    return refs


def disk_definitions(scopes: list[etree._Element], path: str | Path,
                     properties: dict[str, str]) -> dict[str, DiskDef]:
    """Every ``Disk`` of the DiskSections in ``scopes`` (envelope, then the system), by diskId.

    Capacities may name a ProductSection property (``${disk_size}``); ``properties`` resolves them.
    """
    disks: dict[str, DiskDef] = {}
    for scope in scopes:
        for section in children(scope, "DiskSection"):
            for element in children(section, "Disk"):
                disk_id = attr(element, "diskId")
                if disk_id:
                    disks[disk_id] = DiskDef(disk_id, attr(element, "fileRef"),
                                             _capacity(element, path, properties),
                                             attr(element, "format"), element.sourceline)
    return disks


def _capacity(element: etree._Element, path: str | Path, properties: dict[str, str]) -> int | None:
    raw = (attr(element, "capacity") or "").strip()
    if raw.startswith("${") and raw.endswith("}"):
        raw = properties.get(raw[2:-1], "").strip()
    if not raw:
        return None
    units = attr(element, "capacityAllocationUnits") or "byte"
    try:
        capacity = int(raw) * programmatic_multiplier(units)
        if capacity < 0 or capacity > MAX_BYTES:
            raise UnitError("not between 0 and 2^64 - 1 bytes")
    except (ValueError, UnitError) as exc:
        raise InputError(f"Disk '{attr(element, 'diskId')}': capacity '{raw}' {units}: {exc}",
                         path=path, line=element.sourceline) from None
    return capacity


def network_names(scopes: list[etree._Element]) -> list[str]:
    """The logical network names declared by the NetworkSections in ``scopes``."""
    return [name for scope in scopes for section in children(scope, "NetworkSection")
            for network in children(section, "Network") if (name := attr(network, "name"))]


def virtual_systems(root: etree._Element) -> list[etree._Element]:
    """Every VirtualSystem in the envelope, nested collections included, in document order."""
    found: list[etree._Element] = []

    def walk(element: etree._Element) -> None:
        for node in element:
            if not isinstance(node.tag, str):
                continue
            what = kind(node)
            if what == "VirtualSystem":
                found.append(node)
            elif what == "VirtualSystemCollection":
                walk(node)

    walk(root)
    return found


def choose_system(root: etree._Element, path: str | Path, system: str | None) -> etree._Element:
    """The VirtualSystem to run: the only one, or the one whose ``ovf:id`` is ``system``."""
    systems = virtual_systems(root)
    ids = [attr(s, "id") or f"#{n}" for n, s in enumerate(systems, 1)]
    if not systems:
        raise InputError("the envelope has no VirtualSystem", path=path, line=root.sourceline)
    if system is not None:
        if system not in ids:
            raise InputError(f"no VirtualSystem '{system}'; this appliance has: {', '.join(ids)}",
                             path=path)
        return systems[ids.index(system)]
    if len(systems) > 1:
        raise InputError(f"the appliance is a VirtualSystemCollection of {len(systems)} systems "
                         f"({', '.join(ids)}); choose one with --system ID", path=path)
    return systems[0]


def member_path(base: str, href: str, path: str | Path) -> str:
    """The package-relative path of ``href`` (relative to the descriptor folder ``base``).

    Refuses what could escape the package: absolute paths, ``..`` components, URLs.

    >>> member_path("", "disk1.vmdk", "a.ovf")
    'disk1.vmdk'
    >>> member_path("sub", "sun..vhw-disk1.vmdk", "a.ovf")
    'sub/sun..vhw-disk1.vmdk'
    """
    if "://" in href or href.startswith(("/", "\\")) or (len(href) > 1 and href[1] == ":"):
        raise UnsafeInputError(f"file reference '{href}' is not a path inside the package", path=path)
    parts = href.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeInputError(f"file reference '{href}' escapes the package folder", path=path)
    return posixpath.normpath(posixpath.join(base, href)) if base else posixpath.normpath(href)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None
