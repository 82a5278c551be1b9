"""Disks in a format QEMU cannot save become qcow2 before the guest first starts.

QEMU refuses to migrate, and so to save, a guest with a disk in vmdk, vdi, vhdx or vpc format
("The vmdk format used by node '...' does not support live migration", QEMU 7.2, measured for
each, read-only disks included).  Of these the frontends accept vmdk (every OVA, every
``condor_vmdk_submit``); the others are refused by :mod:`condor_vmsubmit.images.diskimage`.  So the
runner converts such a disk into qcow2 in the sandbox, under the file's own name, once its checks
have passed and before the guest first starts.  The name is what ``transfer_checkpoint_files`` and
``transfer_output_files`` list, so the converted disk, with the guest's writes, is what travels with
every checkpoint, and a later start finds qcow2 there (:func:`adopt_converted`).  docs/runner.md
("Disks QEMU cannot save") has the measurements behind converting on the execute side.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from ..domain.sandbox import Sandbox
from ..images.diskimage import probe
from ..images.imageio import SECTOR
from ..jobcontract import SAVABLE_FORMAT, UNSAVABLE_FORMATS


class ConversionError(Exception):
    """qemu-img could not convert a disk (its message)."""


def unsavable_disks(root: etree._Element, sandbox: Sandbox) -> Iterator[tuple[etree._Element, Path]]:
    """Each file disk of the domain whose driver format QEMU cannot save, with its file in the sandbox."""
    for disk in root.iterfind("devices/disk"):
        driver, source = disk.find("driver"), disk.find("source")
        if driver is None or source is None or driver.get("type") not in UNSAVABLE_FORMATS:
            continue
        path = Path(source.get("file") or "")
        if path.parent == sandbox.root and path.is_file() and not path.is_symlink():
            yield driver, path


def adopt_converted(root: etree._Element, sandbox: Sandbox) -> None:
    """Declare qcow2 the disks an earlier start of this job converted (their file is qcow2 now), so
    that the safety rules read them as what they are."""
    for driver, path in unsavable_disks(root, sandbox):
        with path.open("rb") as image:
            if probe(image.read(SECTOR), path.name) == SAVABLE_FORMAT:
                driver.set("type", SAVABLE_FORMAT)


def convert_unsavable(root: etree._Element, sandbox: Sandbox) -> list[str]:
    """Convert every disk still in a format QEMU cannot save into qcow2, in place; their names."""
    converted = []
    for driver, path in list(unsavable_disks(root, sandbox)):
        partial = path.with_name(path.name + ".partial")
        done = subprocess.run(["qemu-img", "convert", "-q", "-f", driver.get("type"), "-O", SAVABLE_FORMAT,
                               str(path), str(partial)], capture_output=True, text=True)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ConversionError(f"qemu-img could not convert {path.name} to {SAVABLE_FORMAT}: "
                                  f"{done.stderr.strip() or f'exit code {done.returncode}'}")
        os.replace(partial, path)
        driver.set("type", SAVABLE_FORMAT)
        converted.append(path.name)
    return converted
