"""``qemu-direct``: a script-managed hypervisor that runs qemu-system directly, without libvirt.

An admin installs it into the script directory (``VMSUBMIT_SCRIPT_DIR``) under the name of the
hypervisor it provides, e.g. ``ln -s $(command -v condor_vm_qemu_direct) /etc/condor/vm-scripts/qemu-direct``.
It speaks the protocol in :mod:`condor_vmsubmit.runner.script_protocol`.

Files in the sandbox (the working directory): ``qemu.pid``, ``qmp.sock`` (relative, so long
sandbox paths stay within the UNIX socket limit), the console file the runner names in
``VMSUBMIT_CONSOLE`` (``vm-console.log`` by default), and the saved state
``vm-checkpoint/qemu-direct.state``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..jobcontract import CHECKPOINT_DIR, CONSOLE_LOG_FILE, SPEC_FILE
from ..runner.script_protocol import SCREENSHOT_ENV, ScriptOutcome, die_with_parent
from ..spec import Disk, Nic, VMSpec

QEMU = os.environ.get("VMSUBMIT_QEMU", "qemu-system-x86_64")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
PID_FILE = "qemu.pid"
QMP_SOCKET = "qmp.sock"
STATE_FILE = Path(CHECKPOINT_DIR) / "qemu-direct.state"

_NIC_DEVICES = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e",
                "rtl8139": "rtl8139", "vmxnet3": "vmxnet3", "ne2k_pci": "ne2k_pci"}
_DRIVE_INTERFACES = {"virtio": "virtio", "ide": "ide", "sata": "ide", "fdc": "floppy"}
_SUPPORTED_DISK_BUSES = set(_DRIVE_INTERFACES) | {"scsi"}


class Refused(Exception):
    """The spec asks for something this hypervisor will not do."""


def in_sandbox(sandbox: Path, reference: str) -> Path:
    """Where a file the spec names lives in the sandbox: HTCondor transfers files by base name.

    >>> str(in_sandbox(Path("/job"), "/home/alice/vm/disk.qcow2"))
    '/job/disk.qcow2'
    """
    return sandbox / Path(reference).name


def problems(spec: VMSpec, sandbox: Path) -> list[str]:
    """Why this hypervisor cannot run ``spec`` in ``sandbox`` (empty when it can)."""
    found = []
    for index, disk in enumerate(spec.disks):
        if disk.source_type != "file" or not disk.source:
            found.append(f"disk {index}: only file-backed disks are supported")
        elif not in_sandbox(sandbox, disk.source).is_file():
            found.append(f"disk {index}: {Path(disk.source).name} is not in the sandbox")
        if not disk.format:
            found.append(f"disk {index}: no explicit format (formats are never probed)")
        if disk.bus and disk.bus not in _SUPPORTED_DISK_BUSES:
            found.append(f"disk {index}: bus '{disk.bus}' is not supported")
    if spec.shared_folders:
        found.append("shared folders are not supported by qemu-direct")
    if spec.firmware == "efi" and not OVMF_CODE.exists():
        found.append(f"efi firmware requested but {OVMF_CODE} is not installed")
    if spec.kernel_boot and not in_sandbox(sandbox, spec.kernel_boot.kernel).is_file():
        found.append(f"kernel {Path(spec.kernel_boot.kernel).name} is not in the sandbox")
    return found


def qemu_command(spec: VMSpec, sandbox: Path, console: Path, restore: bool) -> list[str]:
    """The qemu-system command line for ``spec`` (pure: no file is touched)."""
    command = [QEMU, "-name", f"guest={spec.name}", "-machine", _machine(spec), "-accel", "tcg",
               "-m", f"{max(1, spec.memory_bytes // 2**20)}M", "-smp", str(spec.vcpus),
               "-nodefaults", "-no-user-config", "-display", "none", "-device", "VGA", "-no-reboot",
               "-chardev", f"file,id=console0,path={console}", "-serial", "chardev:console0",
               "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off", "-pidfile", PID_FILE]
    if spec.firmware == "efi":
        command += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
    if spec.kernel_boot:
        command += ["-kernel", str(in_sandbox(sandbox, spec.kernel_boot.kernel))]
        if spec.kernel_boot.initrd:
            command += ["-initrd", str(in_sandbox(sandbox, spec.kernel_boot.initrd))]
        if spec.kernel_boot.cmdline:
            command += ["-append", spec.kernel_boot.cmdline]
    if any(disk.bus == "scsi" for disk in spec.disks):
        command += ["-device", "virtio-scsi-pci,id=scsi0"]
    for index, disk in enumerate(spec.disks):
        command += _drive(index, disk, sandbox)
    for index, nic in enumerate(spec.nics):
        command += _nic(index, nic)
    if restore:
        command += ["-incoming", f"exec:cat {STATE_FILE}"]
    return command


def _machine(spec: VMSpec) -> str:
    return "q35" if spec.machine and "q35" in spec.machine else "pc"


def _drive(index: int, disk: Disk, sandbox: Path) -> list[str]:
    path = in_sandbox(sandbox, disk.source or "")
    options = f"file={path},format={disk.format},id=drive{index}"
    if disk.readonly or disk.device in ("cdrom", "floppy"):
        options += ",readonly=on"
    if disk.device == "cdrom":
        options += ",media=cdrom"
    if disk.bus == "scsi":
        device = "scsi-cd" if disk.device == "cdrom" else "scsi-hd"
        return ["-drive", f"{options},if=none", "-device", f"{device},drive=drive{index}"]
    interface = "floppy" if disk.device == "floppy" else _DRIVE_INTERFACES.get(disk.bus or "virtio", "virtio")
    if disk.device == "cdrom" and interface == "virtio":
        interface = "ide"
    return ["-drive", f"{options},if={interface}"]


def _nic(index: int, nic: Nic) -> list[str]:
    device = _NIC_DEVICES.get((nic.model or "virtio").lower(), "virtio-net-pci")
    options = f"{device},netdev=net{index},id=nic{index}"
    if nic.mac:
        options += f",mac={nic.mac}"
    return ["-netdev", f"user,id=net{index}", "-device", options]


class QMP:
    """A minimal QEMU Machine Protocol client over the sandbox's UNIX socket."""

    def __init__(self, path: str = QMP_SOCKET, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.stream = self.sock.makefile("rwb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.stream.readline()
            if not line:
                raise ConnectionError("QEMU closed the monitor")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.stream.write(json.dumps(request).encode() + b"\n")
        self.stream.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def _qemu_alive() -> bool:
    try:
        pid = int(Path(PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _wait_for_socket(process: subprocess.Popen, timeout: float = 30.0) -> QMP:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return QMP()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def action_start(spec: VMSpec, sandbox: Path) -> int:
    """Run the guest until it is gone; 0 when QEMU ended cleanly."""
    console = Path(os.environ.get("VMSUBMIT_CONSOLE", sandbox / CONSOLE_LOG_FILE))
    restore = STATE_FILE.exists()
    command = qemu_command(spec, sandbox, console, restore)
    process = subprocess.Popen(command, preexec_fn=die_with_parent, stderr=subprocess.PIPE, text=True)
    down = [f"nic{index}" for index, nic in enumerate(spec.nics) if nic.link == "down"]
    if down or restore:
        try:
            monitor = _wait_for_socket(process)
            for name in down:
                monitor.execute("set_link", name=name, up=False)
            if restore:
                _resume_after_restore(monitor)
            monitor.close()
        except (OSError, RuntimeError, ConnectionError) as exc:
            print(f"could not prepare the guest: {exc}", file=sys.stderr)
    _, errors = process.communicate()
    if process.returncode != 0:
        print(f"qemu exited with {process.returncode}: {errors.strip()}", file=sys.stderr)
        return ScriptOutcome.REJECTED
    return ScriptOutcome.EXECUTED


def _resume_after_restore(monitor: QMP, timeout: float = 120.0) -> None:
    """Wait for the saved state to load, then run the guest (it was paused when saved)."""
    deadline = time.monotonic() + timeout
    while monitor.execute("query-status").get("status") == "inmigrate":
        if time.monotonic() > deadline:
            raise RuntimeError("restoring the saved state did not finish")
        time.sleep(0.02)
    if not monitor.execute("query-status").get("running"):
        monitor.execute("cont")


def action_status() -> int:
    if not _qemu_alive():
        print("shutoff")
        return ScriptOutcome.EXECUTED
    monitor = QMP()
    status = monitor.execute("query-status")
    monitor.close()
    print("running" if status.get("running") else "paused")
    return ScriptOutcome.EXECUTED


def action_monitor(command: str) -> int:
    """pause / resume: one QMP command."""
    monitor = QMP()
    monitor.execute(command)
    monitor.close()
    return ScriptOutcome.EXECUTED


def action_screenshot() -> int:
    """The guest's display (a VGA card no one else sees: ``-display none``) as a PPM file where
    ``VMSUBMIT_SCREENSHOT`` says, through QEMU's ``screendump``."""
    target = os.environ.get(SCREENSHOT_ENV)
    if not target:
        print(f"screenshot: {SCREENSHOT_ENV} names no file", file=sys.stderr)
        return ScriptOutcome.REJECTED
    monitor = QMP()
    monitor.execute("screendump", filename=str(Path(target).absolute()))
    monitor.close()
    return ScriptOutcome.EXECUTED


def action_checkpoint() -> int:
    """Stop the guest, stream its state into the checkpoint folder, and quit QEMU."""
    STATE_FILE.parent.mkdir(exist_ok=True)
    partial = STATE_FILE.with_suffix(".partial")
    monitor = QMP(timeout=60)
    monitor.execute("stop")
    monitor.execute("migrate", uri=f"exec:cat > {partial}")
    while True:
        status = monitor.execute("query-migrate").get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            print(f"saving the guest state {status}", file=sys.stderr)
            return ScriptOutcome.REJECTED
        time.sleep(0.05)
    partial.replace(STATE_FILE)
    monitor.execute("quit")
    monitor.close()
    return ScriptOutcome.EXECUTED


def action_stop() -> int:
    """Ask the guest to power off; after ``VMSUBMIT_STOP_GRACE`` seconds (20), end QEMU."""
    grace = float(os.environ.get("VMSUBMIT_STOP_GRACE", "20"))
    if not _qemu_alive():
        return ScriptOutcome.EXECUTED
    monitor = QMP()
    monitor.execute("system_powerdown")
    deadline = time.monotonic() + grace
    while _qemu_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if _qemu_alive():
        monitor.execute("quit")
    monitor.close()
    return ScriptOutcome.EXECUTED


def action_discover() -> int:
    """Available when qemu-system answers; advertise its version."""
    if shutil.which(QEMU) is None:
        print(f"{QEMU} is not installed", file=sys.stderr)
        return ScriptOutcome.REJECTED
    try:
        done = subprocess.run([QEMU, "-version"], capture_output=True, text=True, timeout=5, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{QEMU} does not run: {exc}", file=sys.stderr)
        return ScriptOutcome.REJECTED
    match = re.search(r"version (\S+)", done.stdout)
    print(f'VM_QEMU_DIRECT_ATTR_VERSION = "{match.group(1) if match else "unknown"}"')
    print(f"VM_QEMU_DIRECT_ATTR_EFI = {'true' if OVMF_CODE.exists() else 'false'}")
    return ScriptOutcome.EXECUTED


def main(argv: Sequence[str] | None = None) -> int:
    """``qemu-direct ACTION JOB_AD_FILE``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: qemu-direct ACTION JOB_AD_FILE", file=sys.stderr)
        return ScriptOutcome.REJECTED
    action = args[0]
    sandbox = Path(os.environ.get("VMSUBMIT_SANDBOX", os.getcwd()))
    os.chdir(sandbox)
    try:
        if action == "discover":
            return action_discover()
        running_actions = ("status", "pause", "resume", "checkpoint", "stop", "screenshot")
        if action in running_actions and not Path(QMP_SOCKET).exists():
            print("no guest is running in this sandbox", file=sys.stderr)
            return ScriptOutcome.REJECTED
        if action == "status":
            return action_status()
        if action in ("pause", "resume"):
            return action_monitor("stop" if action == "pause" else "cont")
        if action == "checkpoint":
            return action_checkpoint()
        if action == "screenshot":
            return action_screenshot()
        if action == "stop":
            return action_stop()
        if action not in ("verify", "start"):
            return ScriptOutcome.NOT_IMPLEMENTED
        spec = VMSpec.from_json(Path(os.environ.get("VMSUBMIT_SPEC", SPEC_FILE)).read_text())
        found = problems(spec, sandbox)
        if found:
            print("; ".join(found), file=sys.stderr)
            return ScriptOutcome.REJECTED
        return action_start(spec, sandbox) if action == "start" else ScriptOutcome.EXECUTED
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"qemu-direct {action}: {exc}", file=sys.stderr)
        return ScriptOutcome.REJECTED


if __name__ == "__main__":
    sys.exit(main())
