"""The runner's side of staged images: a qcow2 overlay in the sandbox over the admin's base.

:func:`use_staged_images` resolves each ``staged:NAME`` disk of the spec inside the
admin's image folder (never a path of the job's choosing), creates the overlay
(``qemu-img create -f qcow2 -b BASE -F FMT``) unless a restored checkpoint brought
it back, and gives the spec the overlay instead.  :func:`attach_backing` then writes
the backing chain into the domain XML explicitly, so libvirt never reads it from the
overlay's header; :func:`condor_vmsubmit.checks.safety.check_domain` accepts such a
chain only when its base lies in the image folder.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree

from ..domain.sandbox import Sandbox
from ..spec import VMSpec
from ..staged import StagedImageError, find_image, image_overlay_name, staged_name


@dataclass(frozen=True)
class Chain:
    """An overlay in the sandbox and the staged base it reads through."""

    overlay: Path
    base: Path
    base_format: str
    target: str | None = None   # the guest's device name of the (first) disk using it


def use_staged_images(spec: VMSpec, sandbox: Sandbox, image_dir: str | None) -> tuple[VMSpec, tuple[Chain, ...]]:
    """``spec`` with every staged disk replaced by its overlay (created here when missing)."""
    chains: dict[str, Chain] = {}
    disks = []
    for disk in spec.disks:
        name = staged_name(disk.source) if disk.source_type == "file" else None
        if name is None:
            disks.append(disk)
            continue
        if name not in chains:
            base, fmt = find_image(image_dir, name)
            chains[name] = Chain(sandbox.root / image_overlay_name(name), base, fmt, disk.target)
            make_overlay(chains[name])
        disks.append(replace(disk, source=chains[name].overlay.name, format="qcow2", capacity_bytes=None))
    return replace(spec, disks=tuple(disks)), tuple(chains.values())


def without_overlays(spec: VMSpec, chains: tuple[Chain, ...]) -> VMSpec:
    """``spec`` without the overlay disks (what post-match verification reads: the job's own files)."""
    names = {chain.overlay.name for chain in chains}
    return replace(spec, disks=tuple(disk for disk in spec.disks if disk.source not in names))


def make_overlay(chain: Chain) -> None:
    """The overlay file; one that is already there (the guest's writes, back with a checkpoint,
    perhaps from another node) is pointed at this node's base, its data untouched."""
    base = ["-b", str(chain.base), "-F", chain.base_format]
    if chain.overlay.is_symlink() or (chain.overlay.exists() and not chain.overlay.is_file()):
        raise StagedImageError(f"{chain.overlay.name} in the sandbox is not a plain file")
    if chain.overlay.exists():
        _qemu_img(["rebase", "-u", *base, "-f", "qcow2", str(chain.overlay)])
        return
    partial = chain.overlay.with_suffix(".partial")
    _qemu_img(["create", "-q", "-f", "qcow2", *base, str(partial)])
    partial.rename(chain.overlay)


def _qemu_img(arguments: list[str]) -> None:
    done = subprocess.run(["qemu-img", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise StagedImageError(f"qemu-img {arguments[0]} of the staged image's overlay failed: "
                               f"{done.stderr.strip()}")


def attach_backing(root: etree._Element, chains: tuple[Chain, ...], sandbox: Sandbox) -> None:
    """Point the domain's staged disks at their overlays and give each its backing chain.

    A replayed domain XML names a staged image as ``<source file='staged:NAME'/>``: that
    source becomes the overlay, with driver type qcow2.  A staged image the XML does not
    name (``--image``) is added as a virtio disk with the spec's target.
    """
    by_overlay = {str(chain.overlay): chain for chain in chains}
    missing = {str(chain.overlay) for chain in chains if chain.target and chain.target not in
             {target.get("dev") for target in root.iterfind("devices/disk/target")}}
    devices = root.find("devices")
    for path in missing:
        disk = etree.SubElement(devices, "disk", type="file", device="disk")
        etree.SubElement(disk, "source", file=path)
        etree.SubElement(disk, "target", dev=by_overlay[path].target, bus="virtio")
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        if source is None or not source.get("file"):
            continue
        chain = by_overlay.get(source.get("file"))
        name = staged_name(source.get("file"))
        if chain is None and name is not None:
            chain = next((c for c in chains if c.overlay.name == image_overlay_name(name)), None)
        if chain is None:
            continue
        source.set("file", str(chain.overlay))
        driver = disk.find("driver")
        if driver is None:
            driver = etree.Element("driver", name="qemu")
            disk.insert(0, driver)
        driver.set("type", "qcow2")
        for old in disk.findall("backingStore"):
            disk.remove(old)
        backing = etree.Element("backingStore", type="file")
        etree.SubElement(backing, "format", type=chain.base_format)
        etree.SubElement(backing, "source", file=str(chain.base))
        etree.SubElement(backing, "backingStore")
        source.addnext(backing)
