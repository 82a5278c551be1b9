"""Safety rules for a domain XML about to reach the host's libvirt.

:func:`check_domain` is pure in the sense that matters: it reads the XML and, for
disks that lie inside the sandbox, the first bytes of their image headers; it never
reads or opens anything outside the job's sandbox.  It returns every
:class:`Refusal` it finds (an empty list means the XML may be started).

Both sides run the same rules.  The structural rules read only the XML; the file rules ask a
:class:`Files` view for each file the XML names: the runner's :class:`SandboxFiles` sees the job's
sandbox on the execute node (symlinks resolved), the submit side's :class:`TransferredFiles` sees
the files the job will transfer, on the submit host, under the names they get in the sandbox.  What
only the execute node can know (whether its QEMU emulator or a firmware file exists, a file that is
not transferred) passes on the submit side and is judged again by the runner.

What is refused, and why:

* hypervisor pass-through: any element of a libvirt hypervisor namespace
  (``qemu:commandline``, ``qemu:env``, ``qemu:override`` ...) or any other foreign
  namespace outside ``<metadata>``; a custom ``<emulator>`` (anything but the host's own
  ``/usr/bin/qemu-system-*``, which ``virsh dumpxml`` writes into every domain); ``<bootloader>``;
  interface ``<script>``/``<downscript>``; a virtiofs ``<binary>``;
* security labels: ``<seclabel>`` anywhere; cgroup placement (``<resource>``);
* host devices: ``<hostdev>``, ``<redirdev>``, ``<shmem>``, passthrough/evdev input,
  passthrough TPM, host smartcards, block/network/volume/nvme/vhostuser disks and
  ``device='lun'``, block/volume filesystems, GPU render nodes; host cdrom and floppy
  drives (block cdrom/floppy disks) unless the admin allows them (VMSUBMIT_ALLOW_HOST_MEDIA);
* host paths: every disk, filesystem, character device, loader, nvram, kernel,
  initrd, dtb, ACPI table, fw_cfg entry, log file, audio file, nvdimm source and
  socket must be an absolute path that, symlinks resolved, lies in the sandbox
  (except a read-only loader or an nvram template from the host's firmware packages
  under /usr/share);
* disk images: a disk with a source and no explicit ``<driver type>`` (libvirt must
  never guess the format of an untrusted image), formats the runner cannot inspect,
  images with a backing file, an external data file or VMDK extents outside the
  sandbox, and ``<backingStore>``/``<mirror>``/``<dataStore>`` in the XML -- except the
  runner's own overlay of a staged image: a qcow2 overlay in the sandbox whose explicit
  ``<backingStore>`` is a file in the admin's image folder (VMSUBMIT_IMAGE_DIR), read-only;
* network: interfaces other than ``user``; ``network`` and ``bridge`` only for names
  the admin allows; port forwards; custom tap/vhost devices; multicast or malformed
  MAC addresses;
* character devices of type tcp, udp, stdio or dbus (they reach beyond the
  sandbox) and ``dev`` devices outside it;
* graphics: ``sdl``/``desktop``/``dbus`` (host display or bus), and vnc/spice/rdp
  listening anywhere but loopback or a socket in the sandbox.  A graphics element
  with no explicit listen address would listen wherever the host's qemu.conf says,
  so it is refused too; :func:`pin_graphics_to_loopback` makes such XML explicit
  (the runner applies it to user XML before the check);
* crash dumps (``<on_crash>coredump-*``), which libvirt writes outside the sandbox.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from lxml import etree

from ..errors import VMSubmitError
from ..images.diskimage import read_header, read_image
from ..images.imageio import ImageInfo
from ..spec import VMSpec

LIBVIRT_NS_PREFIX = "http://libvirt.org/schemas/domain/"
LOOPBACK = "127.0.0.1"
SYSTEM_FIRMWARE_DIR = "/usr/share/"
# The host's QEMU system emulators (what libvirt itself picks); any other <emulator> is custom.
_SYSTEM_EMULATOR = re.compile(r"/usr/(?:bin/qemu-system-[\w.-]+|bin/qemu-kvm|libexec/qemu-kvm)")

# Disk image formats whose headers the runner reads (images.diskimage) to rule out hidden files.
CHECKABLE_FORMATS = ("raw", "iso", "qcow2", "vmdk")
_ALLOWED_DISK_TYPES = ("file", "dir")
_CHARDEVS = ("serial", "parallel", "console", "channel")
_SAFE_CHAR_TYPES = ("null", "vc", "pty", "file", "pipe", "unix", "dev", "spicevmc", "spiceport",
                    "qemu-vdagent", "nmdm")
_LISTENING_GRAPHICS = ("vnc", "spice", "rdp")
_SAFE_AUDIO = ("none", "spice", "file")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# Attributes of <source> elements that name host paths.
_SOURCE_PATH_ATTRS = ("file", "path", "dir", "socket")
# (element, attribute) pairs elsewhere that name host paths.
_PATH_ATTRS = {("log", "file"), ("nvram", "template"), ("audio", "path"), ("entry", "file"),
               ("backend", "logFile"), ("listen", "socket"), ("graphics", "socket"),
               ("target", "path")}
# Elements whose text is a host path.
_PATH_TEXT = {("os", "loader"), ("os", "nvram"), ("os", "kernel"), ("os", "initrd"), ("os", "dtb"),
              ("acpi", "table"), ("source", "path"), ("device", "path")}


@dataclass(frozen=True)
class Refusal:
    """One reason the domain may not start: which element, where, and why."""

    element: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.element} (line {self.line})" if self.line else self.element
        return f"{where}: {self.reason}"


class Files(Protocol):
    """How one side sees the files a domain names; the file rules ask it, nothing else does."""

    @property
    def sandbox(self) -> Path:
        """The job's sandbox, as the domain's paths name it."""

    def real(self, value: str) -> Path:
        """Where the absolute path ``value`` leads on the execute node, as far as this side can tell."""

    def readable(self, path: Path) -> Path | None:
        """The file to read for ``path`` in the sandbox; None when this side does not have it."""

    def sandboxed(self, local: Path) -> bool:
        """Whether the file this side read at ``local`` is in the job's sandbox."""

    def host_file(self, value: str, *, executable: bool = False) -> bool | None:
        """Whether the execute node has the (executable) file ``value``; None when this side cannot tell."""


@dataclass(frozen=True)
class SandboxFiles:
    """The runner's view: the job's sandbox on this execute node, every symlink resolved."""

    root: Path

    @property
    def sandbox(self) -> Path:
        return Path(os.path.realpath(self.root))

    def real(self, value: str) -> Path:
        return Path(os.path.realpath(value))

    def readable(self, path: Path) -> Path | None:
        return path

    def sandboxed(self, local: Path) -> bool:
        return Path(os.path.realpath(local)).parent == self.sandbox

    def host_file(self, value: str, *, executable: bool = False) -> bool | None:
        real = os.path.realpath(value)
        return os.path.isfile(real) and (not executable or os.access(real, os.X_OK))


@dataclass(frozen=True)
class TransferredFiles:
    """The submit side's view: the sandbox-to-be holds the transferred ``files`` (name in the sandbox →
    file on the submit host; HTCondor copies contents, so no symlink survives the transfer); any other
    path belongs to the execute node, which this side cannot see."""

    sandbox: Path
    files: Mapping[str, Path]

    def real(self, value: str) -> Path:
        """``value`` with ``..`` and ``.`` resolved in the text (the execute node's symlinks are unknown).

        >>> TransferredFiles(Path("/job"), {}).real("/job/../etc/passwd")
        PosixPath('/etc/passwd')
        """
        return Path(os.path.normpath(value))

    def readable(self, path: Path) -> Path | None:
        local = self.files.get(path.name) if path.parent == self.sandbox else None
        return local if local is not None and local.is_file() else None

    def sandboxed(self, local: Path) -> bool:
        sent = self.files.get(local.name)
        return sent is not None and os.path.realpath(sent) == os.path.realpath(local)

    def host_file(self, value: str, *, executable: bool = False) -> bool | None:
        return None


@dataclass(frozen=True)
class _Context:
    files: Files
    allowed_networks: frozenset[str] | None
    images: dict[tuple[Path, str], tuple[str, ...]] = field(default_factory=dict)  # reasons per image read
    allow_host_media: bool | None = False
    image_dir: Path | None = None
    declared_backing: frozenset[str] = frozenset()

    @property
    def sandbox(self) -> Path:
        return self.files.sandbox


def check_domain(root: etree._Element, sandbox: Path | Files, *,
                 allowed_networks: Iterable[str] | None = (), allow_host_media: bool | None = False,
                 image_dir: str | Path | None = None, declared_backing: Iterable[str] = ()) -> list[Refusal]:
    """Every reason the domain XML ``root`` may not be handed to libvirt for a job in ``sandbox``
    (a folder on this execute node, or a :class:`Files` view of the job's files).

    ``allowed_networks`` names the libvirt networks and host bridges the admin lets
    jobs join (VMSUBMIT_ALLOWED_NETWORKS); without it only user-mode networking passes.
    ``allow_host_media`` lets host cdrom and floppy drives through (VMSUBMIT_ALLOW_HOST_MEDIA).
    None for either means this side does not know the execute node's setting (the submit side
    reading no configuration): what it would decide passes, and the runner decides.
    ``image_dir`` is the admin's folder of staged images a ``<backingStore>`` may name.
    ``declared_backing`` names the images whose backing chain the user declared at submit time
    (``--allow-backing``); such a chain passes when every file of it is in the sandbox and every
    backing format is recorded in the headers, so libvirt never probes one.
    Linear in the size of the XML; each image's headers are read once.
    """
    files = SandboxFiles(sandbox) if isinstance(sandbox, Path) else sandbox
    context = _Context(files, None if allowed_networks is None else frozenset(allowed_networks),
                       allow_host_media=allow_host_media,
                       image_dir=Path(os.path.realpath(image_dir)) if image_dir else None,
                       declared_backing=frozenset(declared_backing))
    refusals: list[Refusal] = []
    for element, name in _elements(root):
        for reason in _reasons(element, context):
            refusals.append(Refusal(name, element.sourceline, reason))
    return refusals


def declared_backing(spec: VMSpec) -> frozenset[str]:
    """The sandbox names of the images whose backing chain the user declared (``--allow-backing``)."""
    return frozenset(PurePosixPath(disk.source).name for disk in spec.disks if disk.backing and disk.source)


def pin_graphics_to_loopback(root: etree._Element) -> etree._Element:
    """A copy of ``root`` whose vnc/spice/rdp graphics without a listen address listen on loopback."""
    pinned = copy.deepcopy(root)
    for graphics in pinned.iter("graphics"):
        if graphics.get("type") not in _LISTENING_GRAPHICS or graphics.get("listen"):
            continue
        listens = graphics.findall("listen")
        if not listens:
            graphics.set("listen", LOOPBACK)
        for listen in listens:
            if listen.get("type", "address") == "address" and not listen.get("address"):
                listen.set("type", "address")
                listen.set("address", LOOPBACK)
    return pinned


def _elements(root: etree._Element) -> Iterator[tuple[etree._Element, str]]:
    """Every element with its XPath-like name (``/domain/devices/disk[2]/source``), in document
    order, skipping comments, PIs and the contents of ``<metadata>``."""
    stack = [(root, "/" + _tag(root))]
    while stack:
        element, name = stack.pop()
        yield element, name
        if element.tag == "metadata":
            continue
        children = [child for child in element if isinstance(child.tag, str)]
        counts = Counter(child.tag for child in children)
        seen: Counter[str] = Counter()
        named = []
        for child in children:
            seen[child.tag] += 1
            index = f"[{seen[child.tag]}]" if counts[child.tag] > 1 else ""
            named.append((child, f"{name}/{_tag(child)}{index}"))
        stack.extend(reversed(named))


def _tag(element: etree._Element) -> str:
    localname = etree.QName(element).localname
    return f"{element.prefix}:{localname}" if element.prefix else localname


def _reasons(element: etree._Element, context: _Context) -> Iterator[str]:
    namespace = etree.QName(element).namespace
    if namespace:
        if namespace.startswith(LIBVIRT_NS_PREFIX):
            yield f"hypervisor pass-through ({namespace}) is not allowed"
        else:
            yield f"elements of the foreign namespace {namespace} are only allowed inside <metadata>"
        return
    parent = element.getparent()
    parent_tag = parent.tag if parent is not None else None
    yield from _path_reasons(element, parent_tag, context)
    rule = _RULES.get(element.tag)
    if rule is not None:
        yield from rule(element, context)


def _path_reasons(element: etree._Element, parent_tag: str | None, context: _Context) -> Iterator[str]:
    """Host paths in attributes or text that must lie inside the sandbox."""
    if element.tag == "source" and parent_tag == "backingStore" and _staged_base(element.getparent(), context):
        return
    if element.tag == "source" and parent_tag not in ("interface", "hostdev", "redirdev"):
        names = _SOURCE_PATH_ATTRS + (("dev",) if parent_tag in _CHARDEVS else ())
        for attribute in names:
            value = element.get(attribute)
            if value is not None:
                yield from _outside(value, f"{attribute}=", context)
    for attribute, value in element.attrib.items():
        if (element.tag, attribute) in _PATH_ATTRS and not (element.tag == "target" and parent_tag != "lease"):
            if (element.tag, attribute) == ("nvram", "template") and _system_firmware(value, context.files):
                continue  # a read-only template libvirt copies into the VM's own nvram
            yield from _outside(value, f"{attribute}=", context)
    if (parent_tag, element.tag) in _PATH_TEXT and (element.text or "").strip():
        if parent_tag == "source" and element.getparent().getparent().tag != "memory":
            return
        if (element.tag == "loader" and element.get("readonly") == "yes"
                and _system_firmware(element.text.strip(), context.files)):
            return
        yield from _outside(element.text.strip(), "", context)


def _system_firmware(value: str, files: Files) -> bool:
    """A firmware file the host's packages installed (OVMF, AAVMF, SeaBIOS under /usr/share):
    world-readable, so a guest may map it read-only.

    >>> here = SandboxFiles(Path("/tmp"))
    >>> _system_firmware("/usr/share/../../etc/passwd", here), _system_firmware("/etc/passwd", here)
    (False, False)
    """
    real = str(files.real(value)) if value.startswith("/") else ""
    return real.startswith(SYSTEM_FIRMWARE_DIR) and files.host_file(real) is not False


def _emulator(element: etree._Element, context: _Context) -> Iterator[str]:
    """Only the host's own QEMU system emulators; anything else would run a program of the user's choosing."""
    path = (element.text or "").strip()
    real = str(context.files.real(path)) if path.startswith("/") else ""
    if not (_SYSTEM_EMULATOR.fullmatch(real) and context.files.host_file(real, executable=True) is not False):
        yield f"emulator '{path}' is not one of the host's QEMU system emulators; leave <emulator> out"


def _outside(value: str, label: str, context: _Context) -> Iterator[str]:
    """Why the host path ``value`` is not acceptable (nothing when it lies in the sandbox)."""
    if not value.startswith("/"):
        yield f"{label}'{value}' is not an absolute path inside the job's sandbox"
        return
    try:
        real = context.files.real(value)
    except (OSError, ValueError) as exc:
        yield f"{label}'{value}' cannot be resolved: {exc}"
        return
    if real != context.sandbox and context.sandbox not in real.parents:
        via = "" if os.path.normpath(value) == str(real) else f" (it resolves to {real})"
        yield f"{label}'{value}' is outside the job's sandbox{via}"


def _inside(value: str | None, context: _Context) -> Path | None:
    """The resolved path of ``value`` when it lies in the sandbox, else None."""
    if not value or not value.startswith("/"):
        return None
    try:
        real = context.files.real(value)
    except (OSError, ValueError):
        return None
    return real if real == context.sandbox or context.sandbox in real.parents else None


# --- rules per element ----------------------------------------------------------------------

def _always(reason: str) -> Callable[[etree._Element, _Context], Iterator[str]]:
    def rule(_element: etree._Element, _context: _Context) -> Iterator[str]:
        yield reason
    return rule


def _disk(element: etree._Element, context: _Context) -> Iterator[str]:
    disk_type = element.get("type", "file")
    if disk_type == "block" and element.get("device") in ("cdrom", "floppy"):
        yield from _host_media(element, context)
        return
    if disk_type not in _ALLOWED_DISK_TYPES:
        yield f"disk type '{disk_type}' reaches host storage; only file disks in the sandbox are allowed"
        return
    if element.get("device") == "lun":
        yield "device='lun' passes SCSI commands to a host device"
    source = element.find("source")
    path = source.get("dir" if disk_type == "dir" else "file") if source is not None else None
    if not path:
        return
    driver = element.find("driver")
    fmt = driver.get("type") if driver is not None else None
    if not fmt:
        yield "disk format missing: give <driver type='raw|qcow2|vmdk'>; an untrusted image is never probed"
        return
    if disk_type == "dir":
        if fmt != "fat":
            yield f"a directory disk must have format 'fat', not '{fmt}'"
        return
    if fmt not in CHECKABLE_FORMATS:
        yield f"disk format '{fmt}' cannot be checked for backing files; use one of {', '.join(CHECKABLE_FORMATS)}"
        return
    inside = _inside(path, context)
    if inside is None or fmt in ("raw", "iso"):
        return  # outside: the path rule on <source> refused it; raw: QEMU interprets nothing inside
    image = context.files.readable(inside)
    if image is None:
        return  # not a file this side has (not transferred): the execute side reads it
    backing = element.find("backingStore")
    if backing is not None and _staged_base(backing, context):
        yield from _overlay_reasons(image, fmt, context)
        return
    if (image, fmt) not in context.images:
        context.images[image, fmt] = tuple(_image_reasons(image, fmt, context))
    yield from context.images[image, fmt]


def _host_media(element: etree._Element, context: _Context) -> Iterator[str]:
    """A host cdrom or floppy drive (``<disk type='block' device='cdrom'>``): refused unless the
    admin allows host media, and then only a device under /dev."""
    device = element.get("device")
    if context.allow_host_media is False:
        yield (f"the host's {device} drive cannot be passed to a job's guest (an admin allows it with "
               "VMSUBMIT_ALLOW_HOST_MEDIA = true); send the image with --cdrom or --floppy")
        return
    source = element.find("source")
    path = source.get("dev") if source is not None else None
    if path and not str(context.files.real(path)).startswith("/dev/"):
        yield f"a host {device} drive must be a device under /dev, not '{path}'"


def _image_reasons(image: Path, fmt: str, context: _Context) -> Iterator[str]:
    try:
        info = read_image(image, allow_backing=True)  # a parent is read only if it sits next to the image
    except VMSubmitError as error:
        yield f"image {image.name}: {error.message}"
        return
    if info.format != fmt:
        yield f"image {image.name} is a {info.format} image, not {fmt} as <driver type> says"
    elif info.backing and image.name in context.declared_backing:
        yield from _declared_chain_reasons(info, context)
    elif info.backing:
        yield (f"image {image.name} has a backing file '{info.backing}'; send a flattened image "
               "(or submit with --allow-backing, which sends the parents too)")


def _declared_chain_reasons(info: ImageInfo, context: _Context) -> Iterator[str]:
    """A backing chain the user declared: every file in the sandbox, every backing format recorded."""
    node: ImageInfo | None = info
    while node is not None and node.backing:
        name = Path(node.path).name
        if node.parent is None:
            yield f"image {name}: its backing file '{node.backing}' is not next to it in the sandbox"
            return
        if not context.files.sandboxed(Path(node.parent.path)):
            yield f"image {name}: its backing file '{node.backing}' is outside the job's sandbox"
            return
        if node.format == "qcow2" and not node.backing_format:
            yield (f"image {name}: the format of its backing file '{node.backing}' is not recorded "
                   "(qemu-img rebase -F FORMAT); formats are never probed")
            return
        node = node.parent


def _staged_base(backing: etree._Element, context: _Context) -> bool:
    """Whether ``<backingStore>`` is a staged image: a raw or qcow2 file in the admin's image
    folder, ending the chain."""
    source = backing.find("source")
    fmt = backing.find("format")
    if context.image_dir is None or source is None or backing.get("type", "file") != "file":
        return False
    real = context.files.real(source.get("file") or "/")
    end = backing.find("backingStore")
    return (real.parent == context.image_dir and context.files.host_file(str(real)) is True and fmt is not None
            and fmt.get("type") in ("raw", "qcow2") and (end is None or end.find("source") is None))


def _overlay_reasons(image: Path, fmt: str, context: _Context) -> Iterator[str]:
    """A staged image's overlay: a qcow2 image whose own backing file is in the image folder."""
    try:
        info = read_header(image)
    except VMSubmitError as error:
        yield f"image {image.name}: {error.message}"
        return
    backing = context.files.real(str(image.parent / info.backing)) if info.backing else None
    if fmt != "qcow2" or info.format != "qcow2":
        yield f"the overlay {image.name} of a staged image must be a qcow2 image"
    elif backing is None or backing.parent != context.image_dir:
        yield f"the overlay {image.name} does not read through a staged image in {context.image_dir}"


def _filesystem(element: etree._Element, _context: _Context) -> Iterator[str]:
    fs_type = element.get("type", "mount")
    if fs_type in ("block", "volume", "bind", "template"):
        yield f"filesystem type '{fs_type}' reaches host storage"
    if element.find("binary") is not None and element.find("binary").get("path"):
        yield "a custom virtiofsd <binary path> would run a host program"


def _interface(element: etree._Element, context: _Context) -> Iterator[str]:
    kind = element.get("type", "user")
    source = element.find("source")
    if kind in ("network", "bridge"):
        name = source.get(kind) if source is not None else None
        if context.allowed_networks is not None and name not in context.allowed_networks:
            allowed = ", ".join(sorted(context.allowed_networks)) or "none"
            yield (f"{kind} '{name}' is not one the admin allows (VMSUBMIT_ALLOWED_NETWORKS: {allowed}); "
                   "use <interface type='user'>")
    elif kind != "user":
        yield f"interface type '{kind}' reaches the host network directly; use <interface type='user'>"
    for tag in ("script", "downscript"):
        if element.find(tag) is not None:
            yield f"<{tag}> would run a host program"
    if element.find("portForward") is not None:
        yield "<portForward> listens on host ports"
    backend = element.find("backend")
    if backend is not None and (backend.get("tap") or backend.get("vhost")):
        yield "<backend tap/vhost> names host devices"
    mac = element.find("mac")
    if mac is not None:
        yield from _mac_reasons(mac.get("address", ""))


def _mac_reasons(address: str) -> Iterator[str]:
    """Why a MAC address is unusable.

    >>> list(_mac_reasons("52:54:00:12:34:56"))
    []
    >>> list(_mac_reasons("01:00:5e:00:00:01"))
    ["MAC address '01:00:5e:00:00:01' is multicast"]
    """
    if not _MAC.fullmatch(address.lower()):
        yield f"MAC address '{address}' is malformed (expected six hex pairs such as 52:54:00:12:34:56)"
    elif int(address[:2], 16) & 1:
        yield f"MAC address '{address}' is multicast"


def _chardev(element: etree._Element, _context: _Context) -> Iterator[str]:
    kind = element.get("type", "pty")
    if kind not in _SAFE_CHAR_TYPES:
        yield f"character device type '{kind}' reaches beyond the sandbox"


def _graphics(element: etree._Element, context: _Context) -> Iterator[str]:
    kind = element.get("type", "")
    if kind not in _LISTENING_GRAPHICS:
        if kind in ("sdl", "desktop", "dbus"):
            yield f"graphics type '{kind}' uses the host's display or bus"
        return
    addresses = [element.get("listen")] if element.get("listen") else []
    explicit = bool(addresses)
    for listen in element.findall("listen"):
        listen_type = listen.get("type", "address")
        if listen_type == "network":
            yield f"listening on the addresses of network '{listen.get('network')}' reaches beyond loopback"
            explicit = True
        elif listen_type in ("socket", "none"):
            explicit = True
        elif listen.get("address"):
            addresses.append(listen.get("address"))
            explicit = True
    for address in addresses:
        if not _is_loopback(address):
            yield f"graphics listening on '{address}' reaches beyond loopback; use {LOOPBACK} or a socket"
    if not explicit and not element.get("socket"):
        yield ("graphics without a listen address listen where the host's qemu.conf says; "
               f"give listen='{LOOPBACK}'")


def _is_loopback(address: str) -> bool:
    """
    >>> _is_loopback("127.0.0.1"), _is_loopback("::1"), _is_loopback("0.0.0.0")
    (True, True, False)
    """
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _input(element: etree._Element, _context: _Context) -> Iterator[str]:
    if element.get("type") in ("passthrough", "evdev"):
        yield f"input type '{element.get('type')}' passes a host input device through"


def _tpm(element: etree._Element, _context: _Context) -> Iterator[str]:
    backend = element.find("backend")
    if backend is not None and backend.get("type") == "passthrough":
        yield "TPM passthrough hands the host's TPM to the guest"


def _smartcard(element: etree._Element, _context: _Context) -> Iterator[str]:
    mode = element.get("mode")
    if mode in ("host", "host-certificates"):
        yield f"smartcard mode '{mode}' uses the host's smartcard readers or certificates"
    elif mode == "passthrough":
        yield from _chardev(element, _context)


def _rng(element: etree._Element, context: _Context) -> Iterator[str]:
    backend = element.find("backend")
    if backend is None:
        return
    if backend.get("model") == "egd":
        yield from _chardev(backend, context)
    elif (backend.text or "").strip() not in ("", "/dev/random", "/dev/urandom"):
        yield f"random number source '{backend.text.strip()}' is not /dev/random or /dev/urandom"


def _audio(element: etree._Element, _context: _Context) -> Iterator[str]:
    kind = element.get("type", "none")
    if kind not in _SAFE_AUDIO:
        yield f"audio backend '{kind}' uses the host's sound system"


def _render_node(element: etree._Element, _context: _Context) -> Iterator[str]:
    if element.get("rendernode"):
        yield f"rendernode '{element.get('rendernode')}' is a host GPU device"


def _on_crash(element: etree._Element, _context: _Context) -> Iterator[str]:
    if (element.text or "").strip().startswith("coredump"):
        yield "crash dumps are written outside the sandbox; use destroy or restart"


def _backing_store(element: etree._Element, context: _Context) -> Iterator[str]:
    parent = element.getparent()
    if parent is not None and parent.tag == "disk" and _staged_base(element, context):
        return
    if element.find("source") is not None:
        yield "a disk with a backing store is not allowed; send a flattened image"


_RULES: dict[str, Callable[[etree._Element, _Context], Iterator[str]]] = {
    "emulator": _emulator,
    "bootloader": _always("a host bootloader program is not allowed"),
    "seclabel": _always("security labels are set by the host, not the job"),
    "resource": _always("cgroup partitions are set by the host, not the job"),
    "hostdev": _always("host devices cannot be passed to a job's guest"),
    "redirdev": _always("USB redirection reaches host devices"),
    "shmem": _always("shared memory with the host is not allowed"),
    "mirror": _always("block-copy mirrors write outside the job's control"),
    "dataStore": _always("an external data store is not allowed"),
    "backingStore": _backing_store,
    "disk": _disk,
    "filesystem": _filesystem,
    "interface": _interface,
    "serial": _chardev,
    "parallel": _chardev,
    "console": _chardev,
    "channel": _chardev,
    "graphics": _graphics,
    "input": _input,
    "tpm": _tpm,
    "smartcard": _smartcard,
    "rng": _rng,
    "audio": _audio,
    "gl": _render_node,
    "acceleration": _render_node,
    "on_crash": _on_crash,
}
