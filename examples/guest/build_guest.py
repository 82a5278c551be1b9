#!/usr/bin/env python3
"""Build the tiny bootable test guest from this host's Debian kernel and busybox-static.

Nothing here is stored in git: the kernel comes from ``/boot/vmlinuz-*``
(``linux-image-cloud-amd64``), the userland from ``/bin/busybox`` (``busybox-static``)
and the virtio modules from ``/lib/modules``.  The initramfs holds busybox and an
``/init`` script that loads the virtio modules, writes a line to the VGA console
(``/dev/tty0``; with ``console=tty0`` the kernel's own messages go there too), runs the job
found on the first virtio disk (a shell script in a raw image, padded with NUL bytes), prints
``condor-vm-exit-status=N`` on the serial console and powers off.  Without a job
disk (or with ``condor-vm-nojob`` on its command line) it prints a few lines and exits 0.

``build_boot_disk`` puts the same kernel and initramfs on a raw disk image that firmware
boots by itself, without a loop device: a FAT file system spanning the whole image, with
SYSLINUX in its boot sector for BIOS (``syslinux``, ``mtools``, ``dosfstools``) and a unified
kernel image as ``EFI/BOOT/BOOTX64.EFI`` for UEFI (``systemd-boot-efi``'s stub, ``objcopy``).

    python3 examples/guest/build_guest.py OUT_DIR [--job 'echo hi; exit 3']

writes ``OUT_DIR/vmlinuz``, ``OUT_DIR/initrd.img``, ``OUT_DIR/job.img`` (with
``--job``) and ``OUT_DIR/domain.xml``, a libvirt domain that boots them.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
# Virtio PCI transport, disk and network drivers (dependencies are resolved from modules.dep).
MODULES = ("virtio_pci", "virtio_blk", "virtio_net")
# For a guest that mounts shared folders (build_guest(..., shares=True)): ``mount -t virtiofs TAG /mnt``,
# and ``mount -t 9p -o trans=virtio TAG /mnt`` with a kernel that has 9p (linux-image-amd64; the cloud
# kernel has none).
SHARE_MODULES = ("virtiofs", "9pnet_virtio", "9p")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
hostname condor-vm-guest
for module in $(cat /lib/modules/load-order); do insmod "/lib/modules/$module" 2>/dev/null; done
echo "condor-vm-guest: up"
echo "condor-vm-guest: up on the screen" > /dev/tty0
status=0
i=0
case " $(cat /proc/cmdline) " in *" condor-vm-nojob "*) nojob=1 ;; *) nojob= ;; esac
while [ -z "$nojob" ] && [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
if [ -z "$nojob" ] && [ -b /dev/vda ]; then
  tr -d '\000' < /dev/vda > /job.sh
  sh /job.sh
  status=$?
fi
sync
echo "condor-vm-exit-status=$status"
poweroff -f
"""


@dataclass(frozen=True)
class Guest:
    """The files of a built guest."""

    kernel: Path
    initrd: Path


def host_kernels(modules: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    """Every ``/boot/vmlinuz-*`` whose ``/lib/modules`` tree has ``modules``, newest name first, with its release."""
    found = []
    for kernel in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        release = kernel.removeprefix("/boot/vmlinuz-")
        dep = Path("/lib/modules", release, "modules.dep")
        if dep.exists() and all(f"/{module}.ko" in dep.read_text() for module in modules):
            found.append((Path(kernel), release))
    return found


def host_kernel(modules: tuple[str, ...] = ()) -> tuple[Path, str]:
    """The newest ``/boot/vmlinuz-*`` with a matching ``/lib/modules`` tree (holding ``modules``), and its release."""
    found = host_kernels(modules)
    if not found:
        raise FileNotFoundError(f"no /boot/vmlinuz-* with modules {', '.join(modules) or ''}: "
                                "apt-get install linux-image-cloud-amd64")
    return found[0]


def module_order(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Module files to insert, dependencies first, from the text of ``modules.dep``.

    >>> dep = "k/a.ko: k/b.ko k/c.ko\\nk/b.ko: k/c.ko\\nk/c.ko:\\n"
    >>> module_order(dep, ("a",))
    ['k/c.ko', 'k/b.ko', 'k/a.ko']
    """
    depends: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        module, _, rest = line.partition(":")
        depends[module] = rest.split()
    by_name = {Path(module).name.removesuffix(".ko"): module for module in depends}
    order: list[str] = []

    def visit(module: str) -> None:
        # modules.dep lists the full closure, deepest last: insert them in reverse.
        for dependency in reversed(depends[module]):
            if dependency not in order:
                order.append(dependency)
        if module not in order:
            order.append(module)

    for name in wanted:
        visit(by_name[name])
    return order


def build_initrd(out: Path, release: str, modules: tuple[str, ...] = MODULES) -> None:
    """Write a gzipped newc cpio with busybox, ``/init`` and the virtio modules to ``out``."""
    modules_root = Path("/lib/modules", release)
    order = module_order((modules_root / "modules.dep").read_text(), modules)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("bin", "dev", "proc", "sys", "lib/modules"):
            (root / folder).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        for module in order:
            shutil.copy2(modules_root / module, root / "lib" / "modules" / Path(module).name)
        (root / "lib" / "modules" / "load-order").write_text("\n".join(Path(m).name for m in order) + "\n")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, check=True,
                                 input="\n".join(names).encode(), capture_output=True).stdout
    out.write_bytes(gzip.compress(archive, compresslevel=6))


def build_guest(out_dir: str | os.PathLike[str], shares: bool = False) -> Guest:
    """Build the guest's kernel and initramfs into ``out_dir``; with ``shares``, from a kernel with virtiofs and
    if there is one 9p, their modules included."""
    if not BUSYBOX.exists():
        raise FileNotFoundError("no /bin/busybox: apt-get install busybox-static")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = SHARE_MODULES if shares and host_kernels(SHARE_MODULES) else SHARE_MODULES[:1] if shares else ()
    kernel, release = host_kernel(extra)
    guest = Guest(kernel=out / "vmlinuz", initrd=out / "initrd.img")
    shutil.copyfile(kernel, guest.kernel)
    build_initrd(guest.initrd, release, MODULES + extra)
    return guest


BOOT_CMDLINE = "console=ttyS0 panic=-1 quiet condor-vm-nojob"
EFI_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND {cmdline}
"""


def build_boot_disk(guest: Guest, out: str | os.PathLike[str], size_mib: int = 48,
                    cmdline: str = BOOT_CMDLINE) -> Path:
    """A raw disk image that boots ``guest`` under BIOS (SYSLINUX) and UEFI (a unified kernel image)."""
    for tool in ("mkfs.fat", "mcopy", "syslinux", "objcopy"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"no {tool}: apt-get install dosfstools mtools syslinux binutils")
    if not EFI_STUB.exists():
        raise FileNotFoundError(f"no {EFI_STUB}: apt-get install systemd-boot-efi")
    image = Path(out)
    image.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "syslinux.cfg").write_text(SYSLINUX_CFG.format(cmdline=cmdline))
        (folder / "cmdline").write_text(cmdline)
        (folder / "os-release").write_text('NAME="condor-vm-guest"\nID=condor-vm-guest\n')
        uki = folder / "BOOTX64.EFI"
        initrd_at = 0x2000000 + -(-guest.kernel.stat().st_size // 0x100000) * 0x100000  # after the kernel
        subprocess.run(["objcopy",
                        "--add-section", f".osrel={folder / 'os-release'}", "--change-section-vma", ".osrel=0x20000",
                        "--add-section", f".cmdline={folder / 'cmdline'}", "--change-section-vma", ".cmdline=0x30000",
                        "--add-section", f".linux={guest.kernel}", "--change-section-vma", ".linux=0x2000000",
                        "--add-section", f".initrd={guest.initrd}", "--change-section-vma", f".initrd={initrd_at:#x}",
                        str(EFI_STUB), str(uki)], check=True, capture_output=True)
        subprocess.run(["mkfs.fat", "-C", "-n", "CONDORVM", str(image), str(size_mib * 1024)],
                       check=True, capture_output=True)
        mtools = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        subprocess.run(["mmd", "-i", str(image), "::/EFI", "::/EFI/BOOT"], check=True, capture_output=True, env=mtools)
        for source, target in ((guest.kernel, "::/vmlinuz"), (guest.initrd, "::/initrd.img"),
                               (folder / "syslinux.cfg", "::/syslinux.cfg"), (uki, "::/EFI/BOOT/BOOTX64.EFI")):
            subprocess.run(["mcopy", "-i", str(image), str(source), target], check=True, capture_output=True,
                           env=mtools)
        subprocess.run(["syslinux", "--install", str(image)], check=True, capture_output=True)
    return image


def write_job_disk(path: str | os.PathLike[str], script: str) -> Path:
    """A raw disk image holding ``script``, padded with NUL bytes to whole 64 KiB."""
    data = script.encode()
    size = max(65536, -(-len(data) // 65536) * 65536)
    target = Path(path)
    target.write_bytes(data + b"\0" * (size - len(data)))
    return target


def domain_xml(name: str, memory_mib: int = 128, job_disk: str | None = "job.img",
               kernel: str = "vmlinuz", initrd: str = "initrd.img") -> str:
    """A libvirt domain booting the guest; paths are relative to the job's sandbox."""
    disk = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{job_disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>""" if job_disk else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=tty0 console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <devices>{disk}
    <interface type='user'>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
  </devices>
</domain>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--job", help="shell script the guest runs (its exit status is the job's)")
    parser.add_argument("--name", default="tiny-guest")
    args = parser.parse_args()
    guest = build_guest(args.out_dir)
    if args.job:
        write_job_disk(Path(args.out_dir) / "job.img", args.job)
    (Path(args.out_dir) / "domain.xml").write_text(domain_xml(args.name, job_disk="job.img" if args.job else None))
    print(f"built {guest.kernel} and {guest.initrd}")


if __name__ == "__main__":
    main()
