"""The domain XML this host starts: rendered from the spec, or the user's own XML replayed.

Both paths give the same guarantees: the domain type the host really supports, a
unique name, a UUID and MAC addresses derived from the job (stable across
restarts, so a saved state restores), explicit disk formats, every file inside the sandbox, user-mode
networking with the link state honoured, the serial console written to a file in the
sandbox, ACPI (so a guest's poweroff ends the domain), no reboot on poweroff, and a display
that listens nowhere when the guest has none (for its screen, runner/screen.py).
What safety still refuses is left for :func:`condor_vmsubmit.checks.safety.check_domain`.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from pathlib import Path

from lxml import etree

from ..checks.safety import pin_graphics_to_loopback
from ..spec import Disk, Nic, VMSpec
from .adapt import adapt_for_batch, bios_on_serial, efi_bootable_scsi
from .sandbox import Sandbox

# Prefix of a guest target device name by bus.
_TARGET_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "fdc": "fd", "xen": "xvd"}
# Interface types a per-job session cannot give: replayed as user-mode networking.
_HOST_NETWORKS = ("network", "bridge")


def domain_name(job_id: str) -> str:
    """A short name unique to the job (libvirt's socket paths have little room to spare).

    >>> domain_name("submit.example.org#12.0#1700000000")
    'cvm-58812b40a1'
    """
    return "cvm-" + hashlib.sha256(job_id.encode()).hexdigest()[:10]


def domain_uuid(job_id: str) -> str:
    """A UUID derived from the job, the same on every restart."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "condor-vm:" + job_id))


def stable_mac(job_id: str, index: int) -> str:
    """A MAC address for a NIC the spec leaves unset: locally administered (QEMU's 52:54:00
    prefix) and the same on every restart, so a saved state restores.

    >>> stable_mac("x#1.0#1", 0)
    '52:54:00:4c:dc:30'
    """
    digest = hashlib.sha256(f"{job_id}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _fill_macs(devices: etree._Element, job_id: str) -> None:
    for index, interface in enumerate(devices.findall("interface")):
        if interface.find("mac") is None:
            interface.insert(0, etree.Element("mac", address=stable_mac(job_id, index)))


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, tag, {k: v for k, v in attributes.items() if v is not None})
    if text is not None:
        element.text = text
    return element


def _target_names(disks: tuple[Disk, ...]) -> list[str]:
    """Guest device names: the spec's own, or the next free one for the disk's bus.

    >>> _target_names((Disk(bus="virtio"), Disk(bus="virtio", target="vda"), Disk(device="cdrom", bus="sata")))
    ['vdb', 'vda', 'sda']
    """
    taken = {disk.target for disk in disks if disk.target}
    names = []
    for disk in disks:
        if disk.target:
            names.append(disk.target)
            continue
        prefix = _TARGET_PREFIX.get(disk.bus or "ide", "sd")
        letter = next(c for c in "abcdefghijklmnopqrstuvwxyz" if prefix + c not in taken)
        taken.add(prefix + letter)
        names.append(prefix + letter)
    return names


def render_spec(spec: VMSpec, sandbox: Sandbox, *, domain_type: str, job_id: str) -> etree._Element:
    """The domain for ``spec``, with every file the spec names taken from the sandbox."""
    root = etree.Element("domain", type=domain_type)
    _sub(root, "name", domain_name(job_id))
    _sub(root, "uuid", domain_uuid(job_id))
    _sub(root, "title", spec.name)
    _sub(root, "memory", str(-(-spec.memory_bytes // 1024)), unit="KiB")
    _sub(root, "vcpu", str(spec.vcpus), current=str(spec.vcpus_current) if spec.vcpus_current else None)
    os_element = _sub(root, "os", firmware="efi" if spec.firmware == "efi" else None)
    _sub(os_element, "type", "hvm", arch=spec.arch or "x86_64")
    if spec.kernel_boot:
        _sub(os_element, "kernel", str(sandbox.file(spec.kernel_boot.kernel)))
        if spec.kernel_boot.initrd:
            _sub(os_element, "initrd", str(sandbox.file(spec.kernel_boot.initrd)))
        if spec.kernel_boot.cmdline:
            _sub(os_element, "cmdline", spec.kernel_boot.cmdline)
    bios_on_serial(os_element)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _lifecycle_actions(root)
    devices = _sub(root, "devices")
    for disk, target in zip(spec.disks, _target_names(spec.disks), strict=True):
        _disk(devices, disk, target, sandbox)
    for nic in spec.nics:
        _nic(devices, nic)
    _fill_macs(devices, job_id)
    _console(devices, sandbox)
    _display(devices)
    return root


def _lifecycle_actions(root: etree._Element) -> None:
    for tag, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        for old in root.findall(tag):
            root.remove(old)
        _sub(root, tag, action)


def _disk(devices: etree._Element, disk: Disk, target: str, sandbox: Sandbox) -> None:
    element = _sub(devices, "disk", type="file", device=disk.device)
    # Never let libvirt probe an image's format: raw reads the file as plain bytes.
    _sub(element, "driver", name="qemu", type=disk.format or "raw")
    if disk.source:
        _sub(element, "source", file=str(sandbox.file(disk.source)))
    _sub(element, "target", dev=target, bus=disk.bus)
    if disk.readonly or disk.device in ("cdrom", "floppy"):
        _sub(element, "readonly")


def _nic(devices: etree._Element, nic: Nic) -> None:
    element = _sub(devices, "interface", type="user")
    if nic.mac:
        _sub(element, "mac", address=nic.mac)
    if nic.model:
        _sub(element, "model", type=nic.model)
    _sub(element, "link", state=nic.link)


def _console(devices: etree._Element, sandbox: Sandbox) -> None:
    """The first serial port, logged (appended across restores) to the console file in the sandbox.

    A pty rather than a plain file, so that ``condor_vm_control console`` can also attach to it
    through the job's libvirt session (QEMU logs everything either way).
    """
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(sandbox.console_log), append="on")
    _sub(serial, "target", port="0")


def _display(devices: etree._Element) -> bool:
    """Give a guest without a display one that listens nowhere (no port, no socket): a VGA card
    whose screen only the job's libvirt session reads (runner/screen.py).  Whether it was added."""
    if devices.find("graphics") is not None or devices.find("video") is not None:
        return False
    graphics = _sub(devices, "graphics", type="vnc")
    _sub(graphics, "listen", type="none")
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    return True


def replay_domain(user: etree._Element, sandbox: Sandbox, *, domain_type: str, job_id: str,
                  spec: VMSpec | None = None) -> tuple[etree._Element, list[str]]:
    """The user's domain XML adapted to this host, and notes on what was adapted.

    Host paths of disks, kernel, initrd and dtb become the same file in the sandbox;
    libvirt networks and bridges become user-mode networking (a per-job session has
    no host networks); serial ports and consoles become the console file.  The cdroms
    and floppies ``spec`` adds (``--cdrom``, ``--floppy``, ``--cdrom-from``), whose targets
    the XML lacks, are appended.  What has no meaning in a batch job or is the old host's
    runtime state is dropped or rewritten (:mod:`.adapt`); SCSI controllers UEFI cannot boot
    from become virtio-scsi.  Everything else is kept for the safety check to judge.
    """
    root = copy.deepcopy(user)
    notes: list[str] = []
    root.set("type", domain_type)
    for tag, value in (("name", domain_name(job_id)), ("uuid", domain_uuid(job_id))):
        element = root.find(tag)
        if element is None:
            element = etree.SubElement(root, tag)
        element.text = value
    if root.find("title") is None:
        _sub(root, "title", (user.findtext("name") or "").strip() or None)
    os_element = root.find("os")
    if os_element is not None:
        for tag in ("kernel", "initrd", "dtb"):
            element = os_element.find(tag)
            if element is not None and (element.text or "").strip():
                element.text = str(sandbox.file(element.text.strip()))
    features = root.find("features")
    if features is None:
        features = _sub(root, "features")
    if features.find("acpi") is None:
        _sub(features, "acpi")
        notes.append("<features>: added <acpi/> so the guest's poweroff ends the job")
    _lifecycle_actions(root)
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    for disk in devices.findall("disk"):
        source = disk.find("source")
        if disk.get("type", "file") == "file" and source is not None and source.get("file"):
            source.set("file", str(sandbox.file(source.get("file"))))
    present = {target.get("dev") for target in devices.findall("disk/target")}
    for disk in spec.disks if spec else ():
        if disk.device in ("cdrom", "floppy") and disk.source and disk.target and disk.target not in present:
            _disk(devices, disk, disk.target, sandbox)
            notes.append(f"<disk device='{disk.device}'>: {Path(disk.source).name} added as {disk.target}")
    for interface in devices.findall("interface"):
        if interface.get("type") in _HOST_NETWORKS:
            notes.append(f"<interface type='{interface.get('type')}'>: replayed as user-mode networking")
            interface.set("type", "user")
            for source in interface.findall("source"):
                interface.remove(source)
    notes += adapt_for_batch(root, domain_type=domain_type, inside=lambda path: _in_sandbox(path, sandbox))
    notes += efi_bootable_scsi(root)
    if os_element is not None:
        bios_on_serial(os_element)
    _fill_macs(devices, job_id)
    for chardev in devices.findall("serial") + devices.findall("console"):
        devices.remove(chardev)
    _console(devices, sandbox)
    if _display(devices):
        notes.append("<graphics>: added a VGA display that listens nowhere, for screenshots (condor_vm_control "
                     "screenshot) and the last screen of a failure")
    return root, notes


def _in_sandbox(path: str, sandbox: Sandbox) -> bool:
    """Whether ``path`` names a place in the sandbox (symlinks are the safety check's concern)."""
    root = str(sandbox.root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def to_text(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode", pretty_print=True)



def job_domain(spec: VMSpec, sandbox: Sandbox, user: etree._Element | None, *, domain_type: str,
               job_id: str) -> tuple[etree._Element, list[str]]:
    """The domain a job starts, and notes on what was adapted: the user's XML (graphics pinned to
    loopback) replayed, else the spec rendered.  The runner starts it; the submit side checks it."""
    if user is not None:
        return replay_domain(pin_graphics_to_loopback(user), sandbox, domain_type=domain_type, job_id=job_id,
                             spec=spec)
    root = render_spec(spec, sandbox, domain_type=domain_type, job_id=job_id)
    return root, efi_bootable_scsi(root)
