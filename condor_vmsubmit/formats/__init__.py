"""Format adapters: each reads one kind of VM description into a :class:`VMSpec`.

:func:`sniff` tells the formats apart by content (extension only as a tie-breaker);
:func:`load` dispatches to the adapter.  Adapters are imported lazily so that a
command reading one format does not pay for the others.
"""

from __future__ import annotations

import importlib
import stat
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..spec import SourceFormat, VMSpec

_ADAPTERS: dict[str, str] = {
    "libvirt": "condor_vmsubmit.formats.libvirt",
    "ovf": "condor_vmsubmit.formats.ovf",
    "vmdk": "condor_vmsubmit.formats.vmdk",
}

_DISK_MAGICS = (b"KDMV", b"COWD", b"QFI\xfb", b"# Disk DescriptorFile")


def sniff(path: str | Path) -> SourceFormat:
    """Which adapter reads ``path``: libvirt XML, OVF/OVA, or a disk image."""
    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):
            raise InputError("not a regular file (pipes, devices and folders are not read)", path=path)
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    suffix = Path(path).suffix.lower()
    if head.startswith(_DISK_MAGICS) or suffix in (".vmdk", ".qcow2", ".img", ".raw"):
        return "vmdk"
    if len(head) > 262 and head[257:262] == b"ustar" or suffix == ".ova":
        return "ovf"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        if b"Envelope" in head and b"<domain" not in head:
            return "ovf"
        if b"<domain" in head:
            return "libvirt"
    if suffix == ".ovf":
        return "ovf"
    if suffix == ".xml":
        return "libvirt"
    raise InputError(
        "not a libvirt domain XML, OVF/OVA appliance or disk image this tool can read", path=path
    )


def load(path: str | Path, fmt: SourceFormat | None = None, **options: Any) -> VMSpec:
    """Read ``path`` with the adapter for ``fmt`` (sniffed when not given)."""
    module = importlib.import_module(_ADAPTERS[fmt or sniff(path)])
    return module.load(path, **options)
