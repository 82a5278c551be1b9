"""What a desktop's domain XML carries that has no meaning in a batch job, or is the old host's
runtime state: dropped or rewritten before the safety check, each with a note naming the element.

virt-install (and so virt-manager) writes SPICE USB redirection, the SPICE agent channel, sound
and a tablet into every graphical domain; ``virsh dumpxml`` of a running domain adds aliases,
pty paths, live graphics ports, socket paths under /var/lib/libvirt, ``<resource>`` partitions
and the security driver's dynamic labels.  None of it is something the user asked the job for.
What really reaches the host (host devices, static labels, host paths, bridges) is left for
:func:`condor_vmsubmit.checks.safety.check_domain` to refuse.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

Inside = Callable[[str], bool]

# SCSI controller models the UEFI firmware (OVMF) has a driver for; libvirt's default (no
# model: lsilogic on x86) and VMware's lsilogic/lsisas1068/buslogic/vmpvscsi are not among them.
EFI_BOOTABLE_SCSI = ("virtio-scsi", "virtio-transitional", "virtio-non-transitional")
_CHARDEVS = ("serial", "parallel", "console", "channel")


def adapt_for_batch(root: etree._Element, *, domain_type: str, inside: Inside) -> list[str]:
    """Drop or rewrite, in ``root``, what a batch job cannot use; the notes.

    ``inside(path)`` tells whether a host path lies in the job's sandbox (a socket the user
    placed there is kept).
    """
    notes: list[str] = []
    devices = root.find("devices")
    if devices is None:
        return notes
    if root.get("id") is not None:
        del root.attrib["id"]  # the old host's domain id
    dropped: dict[str, int] = {}

    def drop(element: etree._Element, label: str) -> None:
        element.getparent().remove(element)
        dropped[label] = dropped.get(label, 0) + 1

    for redirdev in devices.findall("redirdev[@type='spicevmc']"):
        drop(redirdev, "<redirdev type='spicevmc'> (USB redirection from a SPICE client; a batch job has none)")
    for channel in devices.findall("channel"):
        if channel.get("type") in ("spicevmc", "qemu-vdagent"):
            drop(channel, f"<channel type='{channel.get('type')}'> (the SPICE agent's channel to a client)")
    for sound in devices.findall("sound"):
        drop(sound, f"<sound model='{sound.get('model', '')}'> (nobody listens to a batch job)")
    for audio in devices.findall("audio"):
        drop(audio, f"<audio type='{audio.get('type', '')}'> (nobody listens to a batch job)")
    for graphics in devices.findall("graphics"):
        for audio in graphics.findall("audio"):
            graphics.remove(audio)
    for tablet in devices.findall("input[@type='tablet']"):
        drop(tablet, "<input type='tablet'> (no pointer reaches a batch job)")
    for seclabel in root.findall("seclabel[@type='dynamic']"):
        drop(seclabel, f"<seclabel type='dynamic' model='{seclabel.get('model', '')}'> (the old host's labels; "
                       "this host's security driver labels the guest)")
    resource = root.find("resource")
    if resource is not None and all(child.tag == "partition" for child in resource):
        drop(resource, "<resource> (the old host's cgroup partition)")
    for alias in list(devices.iter("alias")):
        if not (alias.get("name") or "").startswith("ua-"):
            drop(alias, "<alias> (the old host's device names)")
    for chardev in (c for tag in _CHARDEVS for c in devices.iter(tag)):
        notes += _chardev(chardev, inside)
    for interface in devices.findall("interface"):
        target = interface.find("target")
        if target is not None and interface.get("type") in ("user", "network", "bridge"):
            interface.remove(target)  # the old host's tap device name
    for graphics in devices.findall("graphics"):
        notes += _graphics_port(graphics)
    notes += _nvram(root.find("os"), inside)
    notes += _resolved_firmware(root.find("os"))
    notes += _cpu(root.find("cpu"), domain_type)
    notes += [f"{label}: dropped" + (f" ({count})" if count > 1 else "") for label, count in dropped.items()]
    return notes


def _chardev(chardev: etree._Element, inside: Inside) -> list[str]:
    """A pty's path and a socket path outside the sandbox are the old host's: libvirt makes new
    ones (sockets in the job's own session, where its paths are short)."""
    if chardev.get("tty") is not None:
        del chardev.attrib["tty"]
    target = chardev.find("target")
    if target is not None and target.get("state") is not None:
        del target.attrib["state"]
    source = chardev.find("source")
    if source is None or source.get("path") is None:
        return []
    kind = chardev.get("type")
    if kind == "pty":
        del source.attrib["path"]
        return []
    if kind == "unix" and source.get("mode") == "bind" and not inside(source.get("path")):
        path = source.attrib.pop("path")
        return [f"<{chardev.tag} type='unix'>: socket {path} is the old host's; libvirt makes one in the job's session"]
    return []


def _graphics_port(graphics: etree._Element) -> list[str]:
    """A live or fixed port would collide with other jobs on the node: libvirt picks a free one."""
    fixed = [attr for attr in ("port", "tlsPort", "websocket") if graphics.get(attr) not in (None, "-1")]
    if graphics.get("autoport") == "yes" or not fixed:
        for attr in fixed:
            del graphics.attrib[attr]
        return []
    for attr in fixed:
        del graphics.attrib[attr]
    graphics.set("autoport", "yes")
    return [f"<graphics type='{graphics.get('type')}'>: fixed port replaced by a free one on this node"]


def _nvram(os_element: etree._Element | None, inside: Inside) -> list[str]:
    """The old host's NVRAM file does not travel: libvirt makes a fresh one from the template."""
    nvram = os_element.find("nvram") if os_element is not None else None
    path = (nvram.text or "").strip() if nvram is not None else ""
    if not path or inside(path):
        return []
    nvram.text = None
    if not nvram.attrib:
        os_element.remove(nvram)
    return [f"<nvram>: {path} is the old host's; a fresh one is made from the firmware's template"]


def _resolved_firmware(os_element: etree._Element | None) -> list[str]:
    """A running domain's XML names the loader its firmware features chose, and keeps the features:
    libvirt refuses that pair back ("feature-based firmware autoselection ... disabled")."""
    if os_element is None or os_element.get("firmware") or os_element.find("loader") is None:
        return []
    firmware = os_element.find("firmware")
    if firmware is None:
        return []
    os_element.remove(firmware)
    return ["<os><firmware>: dropped; it chose the <loader> the domain names"]


def _cpu(cpu: etree._Element | None, domain_type: str) -> list[str]:
    """Without KVM there is no host CPU to pass through: QEMU's ``maximum`` model gives every
    feature it can emulate."""
    if cpu is None or domain_type == "kvm" or cpu.get("mode") != "host-passthrough":
        return []
    cpu.set("mode", "maximum")
    for attr in ("check", "match"):
        cpu.attrib.pop(attr, None)
    return ["<cpu mode='host-passthrough'>: this host has no KVM; using mode='maximum' (all QEMU emulates)"]


def efi_bootable_scsi(root: etree._Element) -> list[str]:
    """UEFI guests with disks on a SCSI controller OVMF has no driver for get virtio-scsi."""
    os_element = root.find("os")
    devices = root.find("devices")
    if os_element is None or devices is None or not _is_efi(os_element):
        return []
    scsi = {disk.find("address").get("controller", "0") if disk.find("address") is not None else "0"
            for disk in devices.findall("disk") if disk.find("target") is not None
            and disk.find("target").get("bus") == "scsi"}
    notes = []
    for index in sorted(scsi):
        controller = devices.find(f"controller[@type='scsi'][@index='{index}']")
        if controller is None and index == "0":
            controller = devices.find("controller[@type='scsi']")
            if controller is not None and controller.get("index") not in (None, "0"):
                controller = None
        if controller is None:
            controller = etree.SubElement(devices, "controller", type="scsi", index=index)
        model = controller.get("model")
        if model in EFI_BOOTABLE_SCSI:
            continue
        controller.set("model", "virtio-scsi")
        notes.append(f"<controller type='scsi' model='{model or 'default (lsilogic)'}'>: UEFI firmware cannot boot "
                     "from it; using virtio-scsi")
    return notes


def bios_on_serial(os_element: etree._Element) -> None:
    """SeaBIOS also writes to the serial console (``<bios useserial='yes'/>``), so the runner sees
    "No bootable device" there."""
    if not _is_efi(os_element) and os_element.find("bios") is None:
        etree.SubElement(os_element, "bios", useserial="yes")


def _is_efi(os_element: etree._Element) -> bool:
    loader = os_element.find("loader")
    return os_element.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
