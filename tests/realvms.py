"""Real users' domain XML, generated at test time: what virt-install writes, and what ``virsh
dumpxml`` gives back once such a domain is defined, and while it runs on a host whose libvirtd
has its default security drivers.

Every domain boots the same disk image (examples/guest/build_guest.py ``build_boot_disk``:
SYSLINUX for BIOS, a unified kernel image for UEFI).  virt-install and the defined domains
use a session libvirtd of the runner's own kind (:class:`GuardianProcess` with every driver,
so ``--network network=default`` is looked up as on a desktop); the running domains a private
system-mode libvirtd (:func:`system_libvirtd`) in a mount namespace of its own, so nothing of
this host's libvirt configuration is used or changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# On q35, libvirt picks OVMF with Microsoft's keys enrolled; the test disk's kernel image is unsigned.
UEFI = "uefi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=no"

# name -> virt-install options besides --name, --memory and the boot disk's path.  Together they
# cover --osinfo (Linux and Windows), --machine pc/q35, --boot uefi, --graphics spice/vnc/none,
# --video, --sound, --network user/default, --cpu host-passthrough/host-model, --vcpus N,maxvcpus=M
# and the disk buses virtio, sata, scsi (virtio-scsi) and ide with cache/io/discard options.
COMBINATIONS: dict[str, tuple[list[str], str]] = {
    "debian11-q35-defaults": (["--osinfo", "debian11"], "bus=virtio,cache=none,io=native,discard=unmap"),
    "debian11-pc-vnc-hostmodel": (["--osinfo", "debian11", "--machine", "pc", "--graphics", "vnc", "--video", "vga",
                                   "--cpu", "host-model", "--vcpus", "1,maxvcpus=4", "--network", "user"],
                                  "bus=sata,cache=writeback"),
    "fedora37-uefi-nographics-scsi": (["--osinfo", "fedora37", "--boot", UEFI, "--graphics", "none",
                                       "--vcpus", "2,maxvcpus=8", "--network", "user"],
                                      "bus=scsi,cache=writethrough,discard=unmap"),
    "ubuntu22.04-pc-qxl-ich6-ide": (["--osinfo", "ubuntu22.04", "--machine", "pc", "--video", "qxl",
                                     "--sound", "ich6"], "bus=ide,cache=none,io=threads"),
    "win10-uefi-vnc-sata": (["--osinfo", "win10", "--boot", UEFI, "--graphics", "vnc", "--sound", "ich9",
                             "--cpu", "host-model", "--network", "user"], "bus=sata,cache=none,io=native"),
    "win11-uefi-spice-sata": (["--osinfo", "win11", "--boot", UEFI, "--network", "user"], "bus=sata"),
    "win2k19-pc-vnc-ide": (["--osinfo", "win2k19", "--machine", "pc", "--graphics", "vnc", "--video", "vga",
                            "--vcpus", "2"], "bus=ide,cache=writeback"),
    "win7-pc-ac97-ide": (["--osinfo", "win7", "--machine", "pc", "--sound", "ac97", "--network", "user"],
                         "bus=ide"),
    "centos-stream9-uefi-virtio": (["--osinfo", "centos-stream9", "--boot", UEFI, "--cpu", "host-passthrough",
                                    "--network", "user"], "bus=virtio,cache=none,io=native,discard=unmap"),
    "alpine3.17-pc-nographics": (["--osinfo", "alpinelinux3.17", "--machine", "pc", "--graphics", "none",
                                  "--vcpus", "1", "--network", "user"], "bus=virtio"),
    "opensuse15.4-q35-scsi-threads": (["--osinfo", "opensuse15.4", "--video", "virtio", "--network", "user"],
                                      "bus=scsi,io=threads,discard=ignore"),
    "linux2022-uefi-sata-bochs": (["--osinfo", "linux2022", "--boot", UEFI, "--video", "bochs",
                                   "--sound", "none", "--network", "user"], "bus=sata,cache=unsafe"),
    "archlinux-pc-uefi-ide": (["--osinfo", "archlinux", "--machine", "pc", "--boot", "uefi", "--graphics", "vnc",
                               "--network", "user"], "bus=ide"),
    "win2k22-uefi-scsi": (["--osinfo", "win2k22", "--boot", UEFI, "--graphics", "spice", "--video", "qxl",
                           "--network", "user"], "bus=scsi,cache=none"),
    "debian11-overcommit": (["--osinfo", "debian11", "--vcpus", "4,maxvcpus=16", "--graphics", "vnc",
                             "--sound", "ich9", "--network", "user"], "bus=virtio,discard=unmap"),
    "ubuntu20.04-uefi-default-net": (["--osinfo", "ubuntu20.04", "--boot", UEFI, "--graphics", "none",
                                      "--cpu", "host-model", "--network", "network=default"], "bus=virtio,cache=none"),
    "rhel9.0-pc-spice-default-net": (["--osinfo", "rhel9.0", "--machine", "pc", "--sound", "ich6",
                                      "--network", "network=default"], "bus=sata,io=threads"),
}

GUEST_UP = "condor-vm-guest: up"


def virt_install_xml(uri: str, name: str, disk: Path, *extra: str) -> str:
    """``virt-install --print-xml --import`` for the combination ``name``, booting ``disk``."""
    options, disk_options = COMBINATIONS[name]
    command = ["virt-install", "--connect", uri, "--print-xml", "--import", "--name", name, "--memory", "256",
               "--disk", f"{disk},format=raw,{disk_options}", "--noautoconsole", *options, *extra]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def virsh(uri: str, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], check=True, capture_output=True, text=True,
                          input=stdin).stdout


def defined_xml(uri: str, xml: str, folder: Path) -> str:
    """``virsh dumpxml`` of ``xml`` once defined (the domain is undefined again)."""
    path = folder / "define.xml"
    path.write_text(xml)
    virsh(uri, "define", str(path))
    dumped = virsh(uri, "dumpxml", _name(xml))
    virsh(uri, "undefine", _name(xml), "--nvram")
    return dumped


def running_xml(uri: str, xml: str, folder: Path) -> str:
    """``virsh dumpxml`` of ``xml`` while it runs (created transient and destroyed again)."""
    path = folder / "create.xml"
    path.write_text(xml)
    virsh(uri, "create", str(path), "--paused")
    try:
        return virsh(uri, "dumpxml", _name(xml))
    finally:
        virsh(uri, "destroy", _name(xml))


def _name(xml: str) -> str:
    return xml.split("<name>", 1)[1].split("</name>", 1)[0]


_SYSTEM_FOLDERS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt", "/etc/libvirt")


@contextlib.contextmanager
def system_libvirtd() -> Iterator[str]:
    """A private system-mode libvirtd (QEMU driver, default security drivers) and its URI.

    It runs in a mount namespace of its own whose libvirt folders are empty tmpfs (the
    configuration a copy of this host's), its QEMU as root, and listens on a socket in a
    temporary folder; it is killed, with its guests, when the block ends.
    """
    folder = Path(tempfile.mkdtemp(prefix="cvm-sys-", dir="/tmp"))
    config = folder / "etc"
    shutil.copytree("/etc/libvirt", config, symlinks=True)
    (config / "libvirtd.conf").write_text(f'unix_sock_dir = "{folder}"\nauth_unix_rw = "none"\n')
    (config / "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    # libvirt looks up its QEMU user before it reads qemu.conf: the namespace's /etc/passwd has one.
    for name, line in (("passwd", "libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin\n"),
                       ("group", "libvirt-qemu:x:64055:\n")):
        (folder / name).write_text(Path("/etc", name).read_text() + line)
    mounts = "; ".join([f"mount -t tmpfs tmpfs {path}" for path in _SYSTEM_FOLDERS[:-1]]
                       + [f"mount --bind {config} /etc/libvirt"]
                       + [f"mount --bind {folder / name} /etc/{name}" for name in ("passwd", "group")])
    log = folder / "libvirtd.log"
    script = f"set -e; mkdir -p {' '.join(_SYSTEM_FOLDERS)}; {mounts}; exec /usr/sbin/libvirtd 2>{log}"
    daemon = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              start_new_session=True)
    socket = folder / "libvirt-sock"
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                log = folder / "libvirtd.log"
                raise RuntimeError(f"the private libvirtd did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.05)
        yield f"qemu:///system?socket={socket}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait()
        shutil.rmtree(folder, ignore_errors=True)
