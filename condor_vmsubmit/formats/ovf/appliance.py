"""OVF 0.9/1.x/2.x descriptors and OVA appliances -> :class:`VMSpec`.

One VirtualSystem (``--system`` in a VirtualSystemCollection) in one DeploymentOption
profile (the default unless ``--profile``) becomes the spec.  Disk sources are the
``References`` hrefs (relative to the descriptor; OVA member names relative to the
descriptor's folder); :mod:`.extract` turns them into files for the job.
OVF-only facts go to ``spec.extras``: ``ovf_version``, ``ovf_system``, ``ovf_profile``,
``product``, ``vendor``, ``product_version``, ``eula`` (yes/no), ``os_type`` and
``ovf_properties`` (JSON of the property values; password properties are left out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from ...errors import InputError
from ...spec import VMSpec
from ...xmlsafe import parse_bytes, parse_file
from . import hardware as hw
from . import ova
from .envelope import (
    attr,
    child,
    children,
    choose_system,
    disk_definitions,
    envelope_version,
    network_names,
    references,
    text,
)
from .product import Product, apply_properties, read_product

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "ovf-envelope.xsd"
SCHEMA_NAMESPACE = "http://schemas.dmtf.org/ovf/envelope/1"


@dataclass(frozen=True)
class Profile:
    """A DeploymentOptionSection Configuration."""

    profile_id: str
    label: str | None
    description: str | None
    default: bool


@dataclass(frozen=True)
class Appliance:
    """A parsed descriptor with the chosen VirtualSystem, before profile and properties apply."""

    path: str
    root: etree._Element
    system: etree._Element
    scopes: list[etree._Element]
    ova: ova.OvaIndex | None

    @property
    def profiles(self) -> list[Profile]:
        return [Profile(attr(c, "id") or "", text(c, "Label"), text(c, "Description"),
                        (attr(c, "default") or "").lower() == "true")
                for scope in self.scopes for section in children(scope, "DeploymentOptionSection")
                for c in children(section, "Configuration")]

    def product(self, profile: str | None = None) -> Product:
        return read_product(self.scopes, profile)


def read_descriptor(path: str | Path) -> tuple[bytes | None, ova.OvaIndex | None]:
    """The descriptor bytes of an OVA (and its index), or ``(None, None)`` for a plain .ovf."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    if Path(path).suffix.lower() == ".ova" or head[257:262] == b"ustar":
        index = ova.index(path)
        return ova.read_member(index, index.descriptor), index
    return None, None


def open_appliance(path: str | Path, system: str | None = None, validate: bool = False) -> Appliance:
    """Parse the descriptor of ``path`` (.ovf or .ova) and choose its VirtualSystem."""
    data, index = read_descriptor(path)
    if index is not None and data is not None:  # XML errors point into the member: FILE.ova!NAME.ovf:LINE
        root = parse_bytes(data, f"{path}!{index.descriptor.name}")
    else:
        root = parse_file(path)
    envelope_version(root, path)
    if validate:
        validate_schema(root, path)
    chosen = choose_system(root, path, system)
    scopes = list(reversed(list(chosen.iterancestors()))) + [chosen]  # envelope, collections, system
    return Appliance(str(path), root, chosen, scopes, index)


def load(path: str | Path, *, validate: bool = False, profile: str | None = None,
         system: str | None = None, properties: Mapping[str, str] | None = None, **_: Any) -> VMSpec:
    """Read the appliance at ``path`` into a spec (see the module docstring)."""
    return spec_from_appliance(open_appliance(path, system, validate), profile, properties or {})


def choose_profile(appliance: Appliance, profile: str | None) -> str | None:
    """``profile`` if declared, else the default (``ovf:default``, else the first), else None."""
    profiles = appliance.profiles
    ids = [p.profile_id for p in profiles]
    if profile is not None:
        if profile not in ids:
            raise InputError(f"no deployment profile '{profile}'; this appliance has: "
                             f"{', '.join(ids) or 'none'}", path=appliance.path)
        return profile
    defaults = [p.profile_id for p in profiles if p.default]
    return (defaults or ids or [None])[0]


def spec_from_appliance(appliance: Appliance, profile: str | None = None,
                        assignments: Mapping[str, str] | None = None) -> VMSpec:
    """Build the spec of the chosen system in ``profile`` with the user's property values."""
    path = appliance.path
    warnings: list[str] = []
    chosen = choose_profile(appliance, profile)
    product = appliance.product(chosen)
    values = apply_properties(product, assignments or {}, path)
    secret = {p.key for p in product.properties if p.password}
    public = {key: value for key, value in values.items() if key not in secret}
    if secret & set(assignments or {}):
        warnings.append("password properties are checked but not carried in the spec")
    section = hw.hardware_section(appliance.system, path, warnings)
    devices = hw.profile_devices(section, chosen)
    files = references(appliance.root)
    disk_defs = disk_definitions(appliance.scopes, path, values)
    version = envelope_version(appliance.root, path)
    extras = {
        "ovf_version": attr(appliance.root, "version") or version,
        "ovf_system": attr(appliance.system, "id") or "",
        "ovf_profile": chosen or "",
        "product": product.name or "",
        "vendor": product.vendor or "",
        "product_version": product.version or "",
        "eula": "yes" if product.eulas else "no",
        "os_type": _os_type(appliance.system),
        "ovf_properties": json.dumps(public, sort_keys=True) if public else "",
    }
    name = text(appliance.system, "Name") or attr(appliance.system, "id") or product.name \
        or Path(path).stem
    return VMSpec(
        source_format="ovf",
        name=name,
        vcpus=hw.vcpus(devices, path, warnings),
        memory_bytes=hw.memory_bytes(devices, path, warnings),
        firmware=hw.firmware(appliance.system),  # type: ignore[arg-type]
        disks=hw.disks(devices, disk_defs, files, warnings),
        nics=hw.nics(devices, network_names(appliance.scopes), warnings),
        extras={key: value for key, value in extras.items() if value},
        source_path=path,
        warnings=tuple(warnings),
    )


def _os_type(system: etree._Element) -> str:
    section = child(system, "OperatingSystemSection")
    if section is None:
        return ""
    return attr(section, "osType") or text(section, "Description") or ""


def validate_schema(root: etree._Element, path: str | Path) -> None:
    """Validate against our XSD of the envelope parts we read; one line per first violation.

    The schema is written for the OVF 1.x namespace and applied to 2.x by renaming;
    OVF 0.9 (``Section xsi:type``) predates DSP0243 and is not validated.
    """
    namespace = etree.QName(root).namespace or ""
    if namespace.rstrip("/") not in ("http://schemas.dmtf.org/ovf/envelope/1",
                                     "http://schemas.dmtf.org/ovf/envelope/2"):
        raise InputError("--validate covers OVF 1.x and 2.x envelopes only", path=path)
    schema = _schema(namespace)
    error = next(iter(schema.iter_errors(root)), None)
    if error is not None:
        line = getattr(error, "sourceline", None)
        reason = error.reason or error.message
        where = getattr(error, "path", None) or ""
        raise InputError(f"not valid against {SCHEMA_PATH.name}: {where}: {reason}",
                         path=path, line=line if isinstance(line, int) else None)


@lru_cache(maxsize=2)
def _schema(namespace: str):  # type: ignore[no-untyped-def]
    import xmlschema

    source = SCHEMA_PATH.read_text().replace(SCHEMA_NAMESPACE, namespace)
    return xmlschema.XMLSchema(source)
