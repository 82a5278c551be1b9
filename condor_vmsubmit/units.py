"""Size units as libvirt, OVF (DMTF DSP0004 programmatic units) and users write them.

>>> libvirt_bytes("4", "GiB")
4294967296
>>> libvirt_bytes("1024", None)
1048576
>>> programmatic_multiplier("byte * 2^20")
1048576
>>> programmatic_multiplier("MegaBytes")
1048576
>>> parse_size("2GiB")
2147483648
"""

from __future__ import annotations

import re

# libvirt's virScaleInteger: decimal prefixes with a B are powers of 1000, the rest powers of 1024.
_LIBVIRT_SCALES = {
    "b": 1, "byte": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
    "gb": 1000**3, "g": 1024**3, "gib": 1024**3,
    "tb": 1000**4, "t": 1024**4, "tib": 1024**4,
    "pb": 1000**5, "p": 1024**5, "pib": 1024**5,
    "eb": 1000**6, "e": 1024**6, "eib": 1024**6,
}

# libvirt refuses sizes that overflow an unsigned long long of bytes.
MAX_BYTES = 2**64 - 1


class UnitError(ValueError):
    """A size or unit that cannot be understood."""


def libvirt_scale(unit: str | None, default: int = 1024) -> int:
    """Bytes per ``unit`` as libvirt reads it; no unit means ``default`` (KiB for memory)."""
    if unit is None or unit.strip() == "":
        return default
    try:
        return _LIBVIRT_SCALES[unit.strip().lower()]
    except KeyError:
        raise UnitError(f"unknown unit '{unit}'") from None


def libvirt_bytes(value: str, unit: str | None, default_scale: int = 1024) -> int:
    """Bytes of a libvirt size such as ``<memory unit='MiB'>512</memory>``."""
    text = value.strip()
    if not re.fullmatch(r"\+?\d+", text):
        raise UnitError(f"'{value}' is not a whole number")
    result = int(text) * libvirt_scale(unit, default_scale)
    if result > MAX_BYTES:
        raise UnitError(f"'{value} {unit or ''}'".replace(" '", "'") + " overflows 64 bits")
    return result


_WORD_UNITS = {
    "byte": 1, "bytes": 1,
    "kilobyte": 1024, "kilobytes": 1024, "kb": 1024, "kib": 1024,
    "megabyte": 1024**2, "megabytes": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "gigabyte": 1024**3, "gigabytes": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "terabyte": 1024**4, "terabytes": 1024**4, "tb": 1024**4, "tib": 1024**4,
}
_PROGRAMMATIC_TERM = re.compile(r"^(\d+)\s*(?:\^\s*(-?\d+))?$")


def programmatic_multiplier(units: str) -> int:
    """Bytes per unit of an OVF AllocationUnits string.

    Understands DSP0004 programmatic units (``byte * 2^20``, ``byte*1024*1024``,
    ``byte * 10^6``) and the word spellings found in the wild (``MegaBytes``, ``KB``).
    As OVF tools do, the word forms are binary (``MegaBytes`` = 2^20).
    """
    text = units.strip()
    word = text.lower().replace(" ", "")
    if word in _WORD_UNITS:
        return _WORD_UNITS[word]
    factors = [part.strip() for part in text.split("*")]
    if not factors or factors[0].lower() not in ("byte", "bytes"):
        raise UnitError(f"unsupported allocation units '{units}'")
    multiplier = 1
    for factor in factors[1:]:
        match = _PROGRAMMATIC_TERM.match(factor)
        if not match:
            raise UnitError(f"unsupported allocation units '{units}'")
        base, exponent = int(match.group(1)), match.group(2)
        if exponent is None:
            multiplier *= base
        else:
            power = int(exponent)
            if power < 0 or power > 80:
                raise UnitError(f"unsupported allocation units '{units}'")
            multiplier *= base**power
    if multiplier > MAX_BYTES:
        raise UnitError(f"allocation units '{units}' overflow 64 bits")
    return multiplier


_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str, default_unit: str = "MiB") -> int:
    """Bytes of a user-typed size (``2GiB``, ``512M``, ``1024`` = ``default_unit``)."""
    match = _SIZE.match(text)
    if not match:
        raise UnitError(f"'{text}' is not a size such as 512MiB or 2GiB")
    return libvirt_bytes(match.group(1), match.group(2) or default_unit, 1)


def human_bytes(count: int) -> str:
    """A short binary-unit rendering for people.

    >>> human_bytes(1536 * 1024**2)
    '1.5 GiB'
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" or value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
