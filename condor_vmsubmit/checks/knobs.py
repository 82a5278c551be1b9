"""The ``VMSUBMIT_*`` configuration knobs: every name, its type, its unit and its case, in one place.

Each :class:`Knob` turns the text HTCondor's configuration holds into the value its readers use
(:meth:`Knob.value`), so discovery, the submit side and the runner read a knob the same way and
refuse the same bad values with the same line.  Where the configuration comes from is
:mod:`condor_vmsubmit.config`'s business; :func:`read` asks it for the knobs named.

>>> MAX_VCPUS.value({"VMSUBMIT_MAX_VCPUS": "8.0"}), ALLOWED_BUSES.value({"VMSUBMIT_ALLOWED_BUSES": "VirtIO, SATA"})
(8, ('virtio', 'sata'))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ..errors import ConfigError

CONFIG = "HTCondor configuration"
T = TypeVar("T")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _fail(name: str, text: str, expected: str) -> ConfigError:
    return ConfigError(f"{name} = '{text}' is not {expected}", path=CONFIG)


def whole_number(name: str, text: str) -> int:
    """A positive whole number; ``8.0`` is 8 (HTCondor writes numbers either way), ``8.5`` is refused.

    >>> whole_number("K", "8"), whole_number("K", "8.0")
    (8, 8)
    >>> whole_number("K", "8.5")
    Traceback (most recent call last):
    condor_vmsubmit.errors.ConfigError: HTCondor configuration: K = '8.5' is not a positive whole number
    """
    try:
        number = float(text)
    except ValueError:
        raise _fail(name, text, "a positive whole number") from None
    if not number.is_integer() or number < 1:
        raise _fail(name, text, "a positive whole number")
    return int(number)


def seconds(name: str, text: str) -> float:
    """A duration in seconds, zero or more.

    >>> seconds("K", "90"), seconds("K", "2.5")
    (90.0, 2.5)
    """
    try:
        number = float(text)
    except ValueError:
        raise _fail(name, text, "a number of seconds") from None
    if not number >= 0:  # also refuses nan
        raise _fail(name, text, "a number of seconds")
    return number


def boolean(name: str, text: str) -> bool:
    """An HTCondor boolean, in any case.

    >>> boolean("K", "True"), boolean("K", "no")
    (True, False)
    """
    word = text.lower()
    if word not in _TRUE + _FALSE:
        raise _fail(name, text, "true or false")
    return word in _TRUE


def words(_name: str, text: str) -> tuple[str, ...]:
    """A comma- or space-separated list, case kept (libvirt network and bridge names are case-sensitive).

    >>> words("K", "default, br0  virbr1")
    ('default', 'br0', 'virbr1')
    """
    return tuple(w for w in re.split(r"[\s,]+", text) if w)


def lower_words(name: str, text: str) -> tuple[str, ...]:
    """A list of names libvirt spells in lower case (disk buses), whatever case the admin wrote."""
    return tuple(w.lower() for w in words(name, text))


def paths(name: str, text: str) -> tuple[Path, ...]:
    """A list of file paths."""
    return tuple(Path(w) for w in words(name, text))


def path(_name: str, text: str) -> Path:
    """One file or folder path."""
    return Path(text)


def text(_name: str, value: str) -> str:
    """Text taken as written."""
    return value


@dataclass(frozen=True)
class Knob(Generic[T]):
    """One ``VMSUBMIT_*`` knob: its name, how its text becomes a value, and the value when unset."""

    name: str
    parse: Callable[[str, str], T]
    default: T
    doc: str

    def value(self, params: Mapping[str, str]) -> T:
        """The knob's value in ``params`` (knob name → text); the default when unset or empty."""
        raw = (params.get(self.name) or "").strip()
        return self.parse(self.name, raw) if raw else self.default


POLICY_XSLT: Knob[tuple[Path, ...]] = Knob(
    "VMSUBMIT_POLICY_XSLT", paths, (), "the admin's policy stylesheets, applied in order")
MAX_MEMORY_MB: Knob[int | None] = Knob(
    "VMSUBMIT_MAX_MEMORY_MB", whole_number, None, "most memory a job's guest may have, in MiB")
MAX_VCPUS: Knob[int | None] = Knob(
    "VMSUBMIT_MAX_VCPUS", whole_number, None, "most vCPUs a job's guest may have")
ALLOWED_NETWORKS: Knob[tuple[str, ...]] = Knob(
    "VMSUBMIT_ALLOWED_NETWORKS", words, (), "libvirt networks and host bridges jobs may join")
ALLOWED_BUSES: Knob[tuple[str, ...]] = Knob(
    "VMSUBMIT_ALLOWED_BUSES", lower_words, (), "disk buses jobs may use (any case); empty: any")
ALLOW_HOST_MEDIA: Knob[bool] = Knob(
    "VMSUBMIT_ALLOW_HOST_MEDIA", boolean, False, "whether user XML may name the host's cdrom or floppy drives")
IMAGE_DIR: Knob[Path | None] = Knob(
    "VMSUBMIT_IMAGE_DIR", path, None, "the admin's folder of staged base images")
SCRIPT_DIR: Knob[Path | None] = Knob(
    "VMSUBMIT_SCRIPT_DIR", path, None, "the admin's scripts for script-managed hypervisors")
RUNNER: Knob[str | None] = Knob(
    "VMSUBMIT_RUNNER", text, None, "the runner's path on execute nodes")
LIBVIRT_URI: Knob[str | None] = Knob(
    "VMSUBMIT_LIBVIRT_URI", text, None, "the libvirt discovery asks")
DISCOVERY_STATE_DIR: Knob[Path | None] = Knob(
    "VMSUBMIT_DISCOVERY_STATE_DIR", path, None, "discovery's libvirt session files and probe cache")
DISCOVERY_PROBE_TTL: Knob[float | None] = Knob(
    "VMSUBMIT_DISCOVERY_PROBE_TTL", seconds, None, "seconds a cached probe stays valid")
DISCOVERY_KEEP: Knob[float] = Knob(
    "VMSUBMIT_DISCOVERY_KEEP", seconds, 1800.0,
    "seconds a verified hypervisor stays advertised while discovery runs are too slow to check it")
MIN_CHECKPOINT_INTERVAL: Knob[float] = Knob(
    "VMSUBMIT_MIN_CHECKPOINT_INTERVAL", seconds, 60.0, "no job saves its guest on its own more often (seconds)")
MAX_CHECKPOINT_INTERVAL: Knob[float | None] = Knob(
    "VMSUBMIT_MAX_CHECKPOINT_INTERVAL", seconds, None, "every job saves its guest at least this often (seconds)")

ALL: tuple[Knob, ...] = (POLICY_XSLT, MAX_MEMORY_MB, MAX_VCPUS, ALLOWED_NETWORKS, ALLOWED_BUSES,
                         ALLOW_HOST_MEDIA, IMAGE_DIR, SCRIPT_DIR, RUNNER, LIBVIRT_URI, DISCOVERY_STATE_DIR,
                         DISCOVERY_PROBE_TTL, DISCOVERY_KEEP, MIN_CHECKPOINT_INTERVAL, MAX_CHECKPOINT_INTERVAL)


def read(chosen: Iterable[Knob]) -> dict[str, str]:
    """The texts of the ``chosen`` knobs that are set in the HTCondor configuration."""
    from ..config import knobs

    return knobs(knob.name for knob in chosen)


def configured(knob: Knob[T]) -> T:
    """The value of ``knob`` in the HTCondor configuration."""
    return knob.value(read((knob,)))
