"""Post-match verification (F4): can this slot, on this host, really run the job's VM?

The runner calls :func:`verify_match` before anything starts; any problem holds the
job (``EXIT_MISMATCH``) with the problems as the hold reason.  It checks what the
matchmaking cannot: the slot's real size against the guest plus QEMU's overhead, the
hypervisor actually usable here, and the disks the job brought, read from their
headers (:func:`condor_vmsubmit.images.diskimage.read_image`), against what the spec
claims.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import classad2

from ..errors import VMSubmitError
from ..images.diskimage import read_image
from ..jobcontract import SAVABLE_FORMAT, UNSAVABLE_FORMATS, request_memory_mib
from ..spec import Disk, VMSpec
from ..units import human_bytes

ANY_HYPERVISOR = "any"
# Formats libvirt accepts for a disk that QEMU reads as plain bytes.
_RAW_ALIASES = {"iso": "raw", "raw": "raw"}


def verify_match(spec: VMSpec, machine_ad: classad2.ClassAd, sandbox: Path,
                 usable_hypervisors: set[str]) -> list[str]:
    """Every way ``spec`` does not fit this slot and host; empty when it fits.

    ``spec.hypervisor`` is the hypervisor the job asks for (None or ``any`` for any);
    ``usable_hypervisors`` are the ones that really work on this host (discovery's probe).
    """
    problems = _slot_problems(spec, machine_ad)
    problems += _hypervisor_problems(spec.hypervisor, usable_hypervisors)
    for number, disk in enumerate(spec.disks, 1):
        problems += _disk_problems(number, disk, sandbox)
    if spec.kernel_boot:
        for what, path in (("kernel", spec.kernel_boot.kernel), ("initrd", spec.kernel_boot.initrd)):
            if path and not (sandbox / PurePosixPath(path).name).is_file():
                problems.append(f"{what} {PurePosixPath(path).name} is not in the job's sandbox")
    return problems


def _slot_problems(spec: VMSpec, machine_ad: classad2.ClassAd) -> list[str]:
    problems = []
    memory_mib = _number(machine_ad, "Memory")
    needed_mib = request_memory_mib(spec.memory_bytes)
    if memory_mib is None:
        problems.append("the machine ad has no Memory: cannot tell whether the guest fits")
    elif needed_mib > memory_mib:
        problems.append(f"the guest needs {needed_mib} MiB ({human_bytes(spec.memory_bytes)} of memory plus QEMU "
                        f"overhead) but this slot has {memory_mib} MiB")
    cpus = _number(machine_ad, "Cpus")
    if cpus is None:
        problems.append("the machine ad has no Cpus: cannot tell whether the vcpus fit")
    elif spec.vcpus > cpus:
        problems.append(f"the guest has {spec.vcpus} vcpus but this slot has {cpus} cpus")
    return problems


def _number(ad: classad2.ClassAd, name: str) -> int | None:
    try:
        value = ad.eval(name)
    except KeyError:
        return None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hypervisor_problems(wanted: str | None, usable: set[str]) -> list[str]:
    """
    >>> _hypervisor_problems("kvm", {"qemu"})
    ["hypervisor 'kvm' is not usable on this host (usable: qemu)"]
    >>> _hypervisor_problems(None, {"qemu"}), _hypervisor_problems("any", set())
    ([], ['no hypervisor is usable on this host'])
    """
    name = (wanted or ANY_HYPERVISOR).lower()
    if not usable:
        return ["no hypervisor is usable on this host"]
    if name != ANY_HYPERVISOR and name not in usable:
        return [f"hypervisor '{name}' is not usable on this host (usable: {', '.join(sorted(usable))})"]
    return []


def _disk_problems(number: int, disk: Disk, sandbox: Path) -> list[str]:
    label = f"disk {number} ({disk.target})" if disk.target else f"disk {number}"
    if disk.source_type == "block" and disk.device in ("cdrom", "floppy"):
        return []  # a host drive: safety refuses it unless the admin allows host media
    if disk.source_type != "file":
        return [f"{label}: a {disk.source_type} disk cannot come with the job"]
    if not disk.source:
        return []  # an empty cdrom or floppy drive
    name = PurePosixPath(disk.source).name
    path = sandbox / name
    if not path.is_file():
        return [f"{label}: {name} is not in the job's sandbox"]
    try:
        info = read_image(path, allow_backing=disk.backing is not None)  # the user declared the chain
    except VMSubmitError as error:
        return [f"{label}: {error.message}"]
    problems = []
    claimed = _RAW_ALIASES.get(disk.format or "", disk.format)
    converted = claimed in UNSAVABLE_FORMATS and info.format == SAVABLE_FORMAT  # by an earlier start (savable.py)
    if claimed and claimed != info.format and not converted:
        problems.append(f"{label}: {name} is a {info.format} image, not {disk.format} as the job says")
    if disk.capacity_bytes is not None and disk.capacity_bytes != info.virtual_size:
        problems.append(f"{label}: {name} holds {info.virtual_size} bytes ({human_bytes(info.virtual_size)}), "
                        f"not the {disk.capacity_bytes} bytes the job says")
    return problems
