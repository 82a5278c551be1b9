"""ProductSection and EulaSection: what the appliance is, its typed properties, its licence.

Properties follow DSP0243 §9.5: the key is ``class.key.instance`` when the section has
a class or instance; the value is ``ovf:value`` unless a ``<Value>`` for the chosen
profile overrides it; types are the CIM ones (uint8..sint64, real32/64, boolean,
string) with the ``MinLen/MaxLen/MinValue/MaxValue/ValueMap`` qualifiers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ...errors import InputError
from .envelope import attr, children, kind, text

_INT_RANGES = {
    "uint8": (0, 2**8 - 1), "sint8": (-(2**7), 2**7 - 1),
    "uint16": (0, 2**16 - 1), "sint16": (-(2**15), 2**15 - 1),
    "uint32": (0, 2**32 - 1), "sint32": (-(2**31), 2**31 - 1),
    "uint64": (0, 2**64 - 1), "sint64": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),  # seen in the wild (VMware), not in DSP0243
}
_QUALIFIER = re.compile(r"(MinLen|MaxLen|MinValue|MaxValue)\(\s*(-?\d+)\s*\)|ValueMap\{([^}]*)\}")


@dataclass(frozen=True)
class Property:
    """One ProductSection property as the chosen profile sees it."""

    key: str
    type: str
    value: str | None
    user_configurable: bool
    password: bool
    qualifiers: str
    label: str | None


@dataclass(frozen=True)
class Product:
    """What the ProductSections and EulaSections of a VirtualSystem say."""

    name: str | None
    vendor: str | None
    version: str | None
    properties: tuple[Property, ...]
    eulas: tuple[str, ...]


def read_product(scopes: list[etree._Element], profile: str | None) -> Product:
    """Product facts and properties of ``scopes`` (the envelope, the collection, the system)."""
    name = vendor = version = None
    properties: list[Property] = []
    eulas: list[str] = []
    for scope in scopes:
        for section in children(scope, "ProductSection"):
            name = name or text(section, "Product")
            vendor = vendor or text(section, "Vendor")
            version = version or text(section, "FullVersion") or text(section, "Version")
            prefix = f"{attr(section, 'class')}." if attr(section, "class") else ""
            suffix = f".{attr(section, 'instance')}" if attr(section, "instance") else ""
            for element in children(section, "Property"):
                only_in = attr(element, "configuration")  # vSphere: a property of some profiles
                if only_in is None or profile in only_in.split():
                    properties.append(_property(element, prefix, suffix, profile))
        eulas += ["\n".join(line.rstrip() for line in (text(section, "License") or "").splitlines())
                  for section in children(scope, "EulaSection")]
    return Product(name, vendor, version, tuple(properties), tuple(e for e in eulas if e))


def _property(element: etree._Element, prefix: str, suffix: str, profile: str | None) -> Property:
    value = attr(element, "value")
    for override in element:
        if isinstance(override.tag, str) and kind(override) == "Value":
            if profile is not None and profile in (attr(override, "configuration") or "").split():
                value = attr(override, "value")
    return Property(
        key=f"{prefix}{attr(element, 'key') or ''}{suffix}",
        type=(attr(element, "type") or "string"),
        value=value,
        user_configurable=(attr(element, "userConfigurable") or "").lower() == "true",
        password=(attr(element, "password") or "").lower() == "true",
        qualifiers=attr(element, "qualifiers") or "",
        label=text(element, "Label"),
    )


def apply_properties(product: Product, assignments: Mapping[str, str], path: str | Path) -> dict[str, str]:
    """The property values after the user's ``--property key=value`` assignments, type-checked.

    Unknown keys, non user-configurable properties and ill-typed values are errors.
    """
    by_key = {p.key: p for p in product.properties}
    values = {p.key: p.value for p in product.properties if p.value is not None}
    for key, value in assignments.items():
        prop = by_key.get(key)
        if prop is None:
            known = ", ".join(sorted(by_key)) or "none"
            raise InputError(f"--property {key}: no such property (this appliance has: {known})", path=path)
        if not prop.user_configurable:
            raise InputError(f"--property {key}: the appliance marks it not user-configurable", path=path)
        problem = type_problem(prop, value)
        if problem:
            raise InputError(f"--property {key}={value}: {problem}", path=path)
        values[key] = value
    return values


def type_problem(prop: Property, value: str) -> str | None:
    """Why ``value`` does not fit ``prop``'s declared type and qualifiers, or None.

    >>> p = Property("port", "uint16", None, True, False, "MinValue(1)", None)
    >>> type_problem(p, "8080") is None, type_problem(p, "0"), type_problem(p, "x")
    (True, 'below the minimum 1', 'not a uint16 number')
    """
    declared = prop.type.lower()
    number: float | None = None
    if declared in _INT_RANGES:
        if not re.fullmatch(r"[+-]?\d+", value.strip()):
            return f"not a {declared} number"
        number = int(value)
        low, high = _INT_RANGES[declared]
        if not low <= number <= high:
            return f"out of the {declared} range {low}..{high}"
    elif declared in ("real32", "real64"):
        try:
            number = float(value)
        except ValueError:
            return f"not a {declared} number"
    elif declared == "boolean":
        if value.strip().lower() not in ("true", "false"):
            return "not a boolean (true or false)"
    elif declared != "string":
        return f"the appliance declares an unknown type '{prop.type}'"
    for match in _QUALIFIER.finditer(prop.qualifiers):
        name, bound, value_map = match.group(1), match.group(2), match.group(3)
        if value_map is not None:
            allowed = [v.strip().strip('"') for v in value_map.split(",")]
            if allowed != [""] and value not in allowed:
                return "not one of " + ", ".join(allowed)
        elif name == "MinLen" and len(value) < int(bound):
            return f"shorter than {bound} characters"
        elif name == "MaxLen" and len(value) > int(bound):
            return f"longer than {bound} characters"
        elif name == "MinValue" and number is not None and number < int(bound):
            return f"below the minimum {bound}"
        elif name == "MaxValue" and number is not None and number > int(bound):
            return f"above the maximum {bound}"
    return None
