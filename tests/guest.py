"""Test helpers: the tiny guest (built once per session) and job sandboxes that run it.

A sandbox looks like the scratch directory the starter prepares: the spec file, the
guest's kernel, initramfs and job disk, and the job and machine ads the runner reads
through ``$_CONDOR_JOB_AD`` / ``$_CONDOR_MACHINE_AD``.  Sandboxes live in short /tmp
folders so the per-job libvirt session keeps its sockets inside them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from condor_vmsubmit import jobcontract
from condor_vmsubmit.config import CONFIG_ATTR, DIGEST_ATTR, digest
from condor_vmsubmit.control.locate import processes
from condor_vmsubmit.domain.render import domain_name
from condor_vmsubmit.spec import Disk, KernelBoot, Nic, VMSpec

REPO = Path(__file__).resolve().parents[1]
CMDLINE = "console=tty0 console=ttyS0 panic=-1 quiet"  # the screen (VGA) and the serial port


@functools.cache
def guest_builder():
    """examples/guest/build_guest.py as a module."""
    path = REPO / "examples" / "guest" / "build_guest.py"
    spec = importlib.util.spec_from_file_location("build_guest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_guest"] = module
    spec.loader.exec_module(module)
    return module


def guest_spec(name: str = "tiny", memory_mib: int = 128) -> VMSpec:
    """The spec of the tiny guest with its job disk, as a frontend would send it."""
    return VMSpec(source_format="libvirt", name=name, vcpus=1, memory_bytes=memory_mib << 20,
                  kernel_boot=KernelBoot("/home/user/vm/vmlinuz", "/home/user/vm/initrd.img", CMDLINE),
                  disks=(Disk(bus="virtio", format="raw", source="/home/user/vm/job.img"),),
                  nics=(Nic(model="virtio", link="down"),))


def make_sandbox(guest_dir: Path, script: str, *, job_id: str, spec: VMSpec | None = None,
                 domain_xml: str | None = None) -> Path:
    """A fresh sandbox whose guest runs ``script`` (its exit status is the guest's)."""
    root = Path(tempfile.mkdtemp(prefix="cvr", dir="/tmp"))
    for name in ("vmlinuz", "initrd.img"):
        os.link(guest_dir / name, root / name)
    guest_builder().write_job_disk(root / "job.img", script)
    (root / jobcontract.SPEC_FILE).write_text((spec or guest_spec()).to_json())
    if domain_xml is not None:
        (root / jobcontract.DOMAIN_XML_FILE).write_text(domain_xml)
    cluster, proc = job_id.split(".")
    (root / "job.ad").write_text(f'ClusterId = {cluster}\nProcId = {proc}\nGlobalJobId = "test#{job_id}#1"\n')
    (root / "machine.ad").write_text('Memory = 2048\nCpus = 2\nVM_HYPERVISORS = { "qemu" }\n')
    configure_node(root)
    return root


def configure_node(sandbox: Path, knobs: dict[str, str] | None = None) -> None:
    """Give the sandbox's node an HTCondor configuration holding ``knobs``, named in its machine
    ad with the digest of those knobs, as condor_vm_discover advertises them (config.py)."""
    config = sandbox / "node_condor_config"
    config.write_text("".join(f"{name} = {value}\n" for name, value in (knobs or {}).items()))
    ad = sandbox / "machine.ad"
    lines = [line for line in ad.read_text().splitlines()
             if line.split("=")[0].strip() not in (CONFIG_ATTR, DIGEST_ATTR)]
    lines += [f'{CONFIG_ATTR} = "{config}"', f'{DIGEST_ATTR} = "{digest(knobs or {})}"']
    ad.write_text("\n".join(lines) + "\n")


def runner_env(sandbox: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_")}
    env.update(_CONDOR_JOB_AD=str(sandbox / "job.ad"), _CONDOR_MACHINE_AD=str(sandbox / "machine.ad"),
               _CONDOR_SCRATCH_DIR=str(sandbox))
    return env


def start_runner(sandbox: Path, *args: str, extra_env: dict[str, str] | None = None,
                 knobs: dict[str, str] | None = None) -> subprocess.Popen:
    """``condor_vm_runner`` as the starter runs it, in a process group of its own; ``knobs``: the
    node's configuration (:func:`configure_node`) from now on."""
    if knobs is not None:
        configure_node(sandbox, knobs)
    return subprocess.Popen([sys.executable, "-m", "condor_vmsubmit.runner", *args], cwd=sandbox,
                            env={**runner_env(sandbox), **(extra_env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


class FakeChirp:
    """A chirp server as the starter runs one, recording what the job sends (``set_job_attr``,
    ``ulog``), with chirp's backslash escapes undone, in ``self.commands``."""

    def __init__(self, folder: Path):
        self.commands: list[str] = []
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    server.commands.append(re.sub(r"\\(.)", r"\1", line.decode().rstrip("\n")))
                    self.wfile.write(b"0\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.config = folder / ".chirp.config"
        self.config.write_text(f"127.0.0.1 {self.server.server_address[1]} secret-cookie\n")

    def attrs(self, name: str, *, delayed: bool = False) -> list[str]:
        """The values set for job attribute ``name`` (``delayed``: by set_job_attr_delayed), in order."""
        prefix = f"set_job_attr{'_delayed' if delayed else ''} {name} "
        return [c[len(prefix):] for c in self.commands if c.startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def console(sandbox: Path) -> str:
    path = sandbox / jobcontract.CONSOLE_LOG_FILE
    return path.read_text(errors="replace") if path.exists() else ""


def counts(sandbox: Path) -> list[int]:
    """The numbers the counting guest printed so far (complete ``count=N`` lines)."""
    complete = console(sandbox).split("\n")[:-1]
    return [int(line.split("=")[1]) for line in complete
            if line.startswith("count=") and line.split("=")[1].strip().isdigit()]


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             runner: subprocess.Popen | None = None) -> None:
    """Poll ``condition``; fail after ``timeout`` or as soon as ``runner`` has exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if runner is not None and runner.poll() is not None:
            raise AssertionError(f"the runner exited with {runner.returncode} while waiting for {what}: "
                                 f"{runner.stderr.read() if runner.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def processes_working_in(folder: Path) -> list[int]:
    """Live processes whose working directory is ``folder`` or below (also once it is
    deleted): the guardian works in the session's state folder, and libvirtd with it."""
    return [process.pid for process in processes() if process.cwd is not None
            and (process.cwd == folder or folder in process.cwd.parents or str(process.cwd) == f"{folder} (deleted)")]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def qemu_of(job_id: str) -> list[int]:
    """The QEMU processes running the job's domain."""
    name = domain_name(f"test#{job_id}#1")
    return [int(p.split(":")[0]) for p in processes_mentioning(f"guest={name},")]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` in the process tree."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def stop_and_clean(runner: subprocess.Popen, sandbox: Path) -> None:
    """Kill a runner a test left running and remove its sandbox."""
    if runner.poll() is None:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    shutil.rmtree(sandbox, ignore_errors=True)


# --- an appliance (OVA) whose one disk boots the guest: what every OVF/VMDK job looks like

DISK_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "condor-vm-guest: up"
sh /job.sh
echo "condor-vm-exit-status=$?"
poweroff -f
"""


def bootable_disk(guest_dir: Path, out: Path, script: str) -> Path:
    """A raw disk that boots the test guest by itself (a FAT file system with syslinux, the
    kernel and an initramfs whose ``/init`` runs ``script``), as an appliance's disk would."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp)
        (extra / "init").write_text(DISK_INIT)
        (extra / "job.sh").write_text(script + "\n")
        (extra / "init").chmod(0o755)
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=extra, check=True,
                                 input=b"init\njob.sh\n", capture_output=True).stdout
        initrd = extra / "initrd.img"  # the guest's, with a second archive whose /init wins
        first = (guest_dir / "initrd.img").read_bytes()  # the kernel reads the next archive at a 4-byte boundary
        initrd.write_bytes(first + bytes(-len(first) % 4) + archive)
        config = extra / "syslinux.cfg"
        config.write_text(f"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img {CMDLINE}\n")
        subprocess.run(["truncate", "-s", "64M", str(out)], check=True)
        subprocess.run(["mkfs.vfat", "-n", "GUEST", str(out)], check=True, capture_output=True)
        subprocess.run(["syslinux", "--install", str(out)], check=True)
        subprocess.run(["mcopy", "-i", str(out), str(guest_dir / "vmlinuz"), str(initrd), str(config), "::/"],
                       check=True)
    return out


def appliance_ova(disk: Path, out: Path, name: str = "counter", memory_mib: int = 128) -> Path:
    """An OVA (OVF 1.0 descriptor, manifest, one streamOptimized VMDK on an IDE controller) made
    from the raw ``disk``."""
    vmdk = out.parent / f"{name}-disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(disk), str(vmdk)], check=True)
    capacity = disk.stat().st_size
    descriptor = f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="{vmdk.name}" ovf:id="file1" ovf:size="{vmdk.stat().st_size}"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}"><Info>the counting guest</Info><Name>{name}</Name>
    <VirtualHardwareSection><Info>hardware</Info>
      <Item><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mib}</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>ide0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""".encode()
    files = {f"{name}.ovf": descriptor, vmdk.name: vmdk.read_bytes()}
    files[f"{name}.mf"] = "".join(f"SHA256({member})= {hashlib.sha256(data).hexdigest()}\n"
                                  for member, data in files.items()).encode()
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    vmdk.unlink()
    return out
