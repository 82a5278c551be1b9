"""Script-managed hypervisors: the protocol edge and the shipped qemu-direct script, with real guests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError
from condor_vmsubmit.jobcontract import CHECKPOINT_DIR, CONSOLE_LOG_FILE, SPEC_FILE
from condor_vmsubmit.runner.script_protocol import (
    ScriptOutcome,
    find_script,
    run_action,
    start_guest,
)
from condor_vmsubmit.scripts.qemu_direct import problems, qemu_command
from condor_vmsubmit.spec import Disk, KernelBoot, Nic, SharedFolder, VMSpec

from guest import configure_node, guest_builder, guest_spec, runner_env, start_runner
from guest import counts as runner_counts
from guest import make_sandbox as runner_sandbox

COUNTING_JOB = "i=0; while true; do echo count=$i; i=$((i+1)); sleep 0.2; done"


def make_sandbox(tmp_path: Path, guest: Path, job: str, **spec_changes) -> Path:
    """A job sandbox as HTCondor would leave it: spec, kernel, initrd, job disk, job ad."""
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        shutil.copy(guest / name, sandbox / name)
    guest_builder().write_job_disk(sandbox / "job.img", job)
    spec = VMSpec(
        "libvirt", "qd-test", 1, 128 * 2**20,
        kernel_boot=KernelBoot("/home/user/vmlinuz", "/home/user/initrd.img", "console=ttyS0 panic=-1"),
        disks=(Disk(bus="virtio", format="raw", source="/home/user/job.img"),),
        **spec_changes,
    )
    (sandbox / SPEC_FILE).write_text(spec.to_json())
    (sandbox / ".job.ad").write_text('VM_TYPE = "script-managed"\nVM_HYPERVISOR = "qemu-direct"\n')
    return sandbox


def call(script: Path, action: str, sandbox: Path):
    return run_action(script, action, sandbox / ".job.ad", sandbox, sandbox / SPEC_FILE, timeout=60)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def counts(console: Path) -> list[int]:
    text = console.read_text(errors="replace") if console.exists() else ""
    return [int(n) for n in re.findall(r"^count=(\d+)\s*$", text, re.M)]


# --- the protocol edge -------------------------------------------------------------------------

def test_find_script_refuses_what_a_user_could_plant(tmp_path, script_dir):
    assert find_script("qemu-direct", script_dir) == script_dir / "qemu-direct"
    with pytest.raises(InputError, match="not a valid"):
        find_script("../bin/sh", script_dir)
    with pytest.raises(InputError, match="no script"):
        find_script("xen", script_dir)
    (script_dir / "plain").write_text("#!/bin/sh\n")
    with pytest.raises(InputError, match="not an executable"):
        find_script("plain", script_dir)
    (script_dir / "plain").chmod(0o775)
    with pytest.raises(InputError, match="writable by group"):
        find_script("plain", script_dir)


def test_exit_codes_map_to_outcomes(tmp_path):
    script = tmp_path / "hv"
    script.write_text('#!/bin/sh\ncase "$1" in\n'
                      '  verify) echo "too much memory" >&2; exit 1;;\n'
                      '  status) echo running; exit 0;;\n'
                      '  pause) exit 3;;\n'
                      '  resume) echo \'VM_MEMORY = 512\'; exit 2;;\n'
                      '  stop) exit 9;;\nesac\n')
    script.chmod(0o755)
    ad = tmp_path / "job.ad"
    ad.write_text("[]")
    result = {a: run_action(script, a, ad, tmp_path, tmp_path / SPEC_FILE)
              for a in ("verify", "status", "pause", "resume", "stop")}
    assert result["verify"].outcome is ScriptOutcome.REJECTED and result["verify"].reason == "too much memory"
    assert result["status"].outcome is ScriptOutcome.EXECUTED and result["status"].stdout.strip() == "running"
    assert result["pause"].outcome is ScriptOutcome.NOT_IMPLEMENTED
    assert result["resume"].outcome is ScriptOutcome.MODIFIED and "VM_MEMORY = 512" in result["resume"].stdout
    assert result["stop"].outcome is ScriptOutcome.FAILED and result["stop"].reason == "exit code 9"


def test_qemu_command_follows_the_spec(tmp_path):
    spec = VMSpec("ovf", "web", 2, 2 * 2**30,
                  disks=(Disk(bus="scsi", format="vmdk", source="a/disk1.vmdk"),
                         Disk(device="cdrom", bus="ide", format="raw", source="seed.iso")),
                  nics=(Nic(model="e1000", mac="52:54:00:aa:bb:cc"), Nic(link="down")))
    command = qemu_command(spec, tmp_path, tmp_path / "console.log", restore=True)
    text = " ".join(command)
    assert "-m 2048M" in text and "-smp 2" in text and "-accel tcg" in text
    assert f"file={tmp_path}/disk1.vmdk,format=vmdk,id=drive0,if=none" in text
    assert "scsi-hd,drive=drive0" in text and "virtio-scsi-pci" in text
    assert f"file={tmp_path}/seed.iso,format=raw,id=drive1,readonly=on,media=cdrom,if=ide" in text
    assert "e1000,netdev=net0,id=nic0,mac=52:54:00:aa:bb:cc" in text
    assert command[-2:] == ["-incoming", f"exec:cat {CHECKPOINT_DIR}/qemu-direct.state"]


def test_problems_name_what_qemu_direct_cannot_do(tmp_path):
    spec = VMSpec("libvirt", "x", 1, 2**27,
                  disks=(Disk(source_type="network", source="nbd://h/x", format="raw"),
                         Disk(source="missing.qcow2"), Disk(source="x.img", format="raw", bus="usb")),
                  shared_folders=(SharedFolder("/data", "data"),))
    (tmp_path / "x.img").write_bytes(b"\0" * 512)
    found = problems(spec, tmp_path)
    assert found == ["disk 0: only file-backed disks are supported",
                     "disk 1: missing.qcow2 is not in the sandbox",
                     "disk 1: no explicit format (formats are never probed)",
                     "disk 2: bus 'usb' is not supported",
                     "shared folders are not supported by qemu-direct"]


# --- real guests through qemu-direct ---------------------------------------------------------

@pytest.mark.guest
def test_discover_advertises_the_qemu_version(tmp_path, script_dir):
    (tmp_path / ".job.ad").write_text("[]")
    result = call(script_dir / "qemu-direct", "discover", tmp_path)
    assert result.outcome is ScriptOutcome.EXECUTED
    version = subprocess.run(["qemu-system-x86_64", "-version"], capture_output=True, text=True).stdout
    advertised = re.search(r'VM_QEMU_DIRECT_ATTR_VERSION = "(.+)"', result.stdout).group(1)
    assert advertised in version


@pytest.mark.guest
def test_guest_runs_to_its_exit_status(tmp_path, guest_dir, script_dir):
    sandbox = make_sandbox(tmp_path, guest_dir, "echo hello from the job; exit 7",
                           nics=(Nic(model="virtio", link="down"),))
    script = script_dir / "qemu-direct"
    assert call(script, "verify", sandbox).outcome is ScriptOutcome.EXECUTED
    guest = start_guest(script, sandbox / ".job.ad", sandbox, sandbox / SPEC_FILE)
    assert guest.wait(timeout=120) == ScriptOutcome.EXECUTED
    console = (sandbox / CONSOLE_LOG_FILE).read_text()
    assert "hello from the job" in console
    assert "condor-vm-exit-status=7" in console


@pytest.mark.guest
def test_pause_resume_checkpoint_and_restore_continue_the_count(tmp_path, guest_dir, script_dir):
    sandbox = make_sandbox(tmp_path, guest_dir, COUNTING_JOB)
    script = script_dir / "qemu-direct"
    console = sandbox / CONSOLE_LOG_FILE
    guest = start_guest(script, sandbox / ".job.ad", sandbox, sandbox / SPEC_FILE)
    try:
        wait_for(lambda: len(counts(console)) >= 3)
        assert call(script, "status", sandbox).stdout.strip() == "running"

        assert call(script, "pause", sandbox).outcome is ScriptOutcome.EXECUTED
        assert call(script, "status", sandbox).stdout.strip() == "paused"
        frozen = counts(console)[-1]
        time.sleep(1.0)
        assert counts(console)[-1] == frozen, "a paused guest kept counting"
        assert call(script, "resume", sandbox).outcome is ScriptOutcome.EXECUTED
        wait_for(lambda: counts(console)[-1] > frozen)

        assert call(script, "checkpoint", sandbox).outcome is ScriptOutcome.EXECUTED
        assert guest.wait(timeout=60) == ScriptOutcome.EXECUTED
    finally:
        guest.kill()
    saved = counts(console)[-1]
    assert (sandbox / CHECKPOINT_DIR / "qemu-direct.state").stat().st_size > 0

    console.rename(sandbox / "console-before.log")
    restored = start_guest(script, sandbox / ".job.ad", sandbox, sandbox / SPEC_FILE)
    try:
        wait_for(lambda: len(counts(console)) >= 2)
        after = counts(console)
        assert after[0] == saved + 1, f"count restarted at {after[0]}, saved at {saved}"
        assert call(script, "status", sandbox).stdout.strip() == "running"
    finally:
        os.environ["VMSUBMIT_STOP_GRACE"] = "1"
        try:
            assert call(script, "stop", sandbox).outcome is ScriptOutcome.EXECUTED
        finally:
            del os.environ["VMSUBMIT_STOP_GRACE"]
        restored.wait(timeout=30)


@pytest.mark.guest
def test_sigkill_of_the_runner_takes_the_guest_with_it(tmp_path, guest_dir, script_dir):
    sandbox = make_sandbox(tmp_path, guest_dir, COUNTING_JOB)
    runner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\n"
         "from condor_vmsubmit.runner.script_protocol import start_guest\n"
         f"s = Path({str(sandbox)!r})\n"
         f"start_guest(Path({str(script_dir / 'qemu-direct')!r}), s / '.job.ad', s, s / {SPEC_FILE!r})\n"
         "time.sleep(600)\n"])
    console = sandbox / CONSOLE_LOG_FILE
    wait_for(lambda: len(counts(console)) >= 1)
    qemu_pid = int((sandbox / "qemu.pid").read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    wait_for(lambda: not Path(f"/proc/{qemu_pid}").exists(), timeout=15)


# --- the same job through condor_vm_runner -----------------------------------------------------

@pytest.mark.guest
def test_runner_passes_a_script_managed_guests_exit_status(guest_dir, script_dir):
    spec = replace(guest_spec("scripted-status"), hypervisor="qemu-direct")
    sandbox = runner_sandbox(guest_dir, "echo via the script; exit 5", job_id="71.0", spec=spec)
    try:
        runner = start_runner(sandbox, knobs={"VMSUBMIT_SCRIPT_DIR": str(script_dir)})
        _, errors = runner.communicate(timeout=120)
        assert runner.returncode == 5, errors
        assert "via the script" in (sandbox / CONSOLE_LOG_FILE).read_text()
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


@pytest.mark.guest
def test_runner_checkpoints_a_script_managed_guest_on_sigterm_and_restores_it(guest_dir, script_dir):
    spec = replace(guest_spec("scripted-ckpt"), hypervisor="qemu-direct")
    sandbox = runner_sandbox(guest_dir, COUNTING_JOB, job_id="72.0", spec=spec)
    env = {"VMSUBMIT_STOP_GRACE": "1"}  # read by qemu-direct
    try:
        runner = start_runner(sandbox, extra_env=env, knobs={"VMSUBMIT_SCRIPT_DIR": str(script_dir)})
        wait_for(lambda: len(runner_counts(sandbox)) >= 3)
        runner.send_signal(signal.SIGTERM)
        _, errors = runner.communicate(timeout=60)
        assert runner.returncode == 85, errors
        saved = runner_counts(sandbox)[-1]
        assert (sandbox / CHECKPOINT_DIR / "qemu-direct.state").exists()

        (sandbox / CONSOLE_LOG_FILE).unlink()  # not a checkpoint file: the next sandbox has none
        again = start_runner(sandbox, extra_env=env)
        wait_for(lambda: len(runner_counts(sandbox)) >= 2)
        assert runner_counts(sandbox)[0] == saved + 1, (sandbox / CONSOLE_LOG_FILE).read_text()[:3000]
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)
        assert again.returncode == 130
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_runner_holds_a_job_whose_script_is_not_installed(tmp_path, script_dir):
    sandbox = tmp_path / "job"
    sandbox.mkdir()
    (sandbox / SPEC_FILE).write_text(replace(guest_spec("noscript"), hypervisor="vmware-fusion").to_json())
    (sandbox / "job.ad").write_text("ClusterId = 1\nProcId = 0\n")
    (sandbox / "machine.ad").write_text("Memory = 2048\nCpus = 2\n")
    configure_node(sandbox)
    done = subprocess.run([sys.executable, "-m", "condor_vmsubmit.runner"], cwd=sandbox, capture_output=True,
                          text=True, env={**runner_env(sandbox), "VMSUBMIT_SCRIPT_DIR": str(script_dir)})
    assert done.returncode == 111
    assert f"no script for hypervisor 'vmware-fusion' in {script_dir}" in done.stderr


def script_job(tmp_path: Path, hypervisor: str | None, script: str) -> Path:
    """A job sandbox whose spec asks for ``hypervisor``, run by ``script`` (an admin's script of that
    name, in the node's script folder) when the hypervisor is script-managed."""
    scripts = tmp_path / "vm-scripts"
    scripts.mkdir()
    if hypervisor is not None:
        (scripts / hypervisor).write_text(script)
        (scripts / hypervisor).chmod(0o755)
    sandbox = tmp_path / "job"
    sandbox.mkdir()
    (sandbox / SPEC_FILE).write_text(VMSpec("libvirt", "tiny", 1, 128 * 2**20, hypervisor=hypervisor).to_json())
    (sandbox / "job.ad").write_text("ClusterId = 1\nProcId = 0\n")
    (sandbox / "machine.ad").write_text("Memory = 2048\nCpus = 2\n")
    configure_node(sandbox, {"VMSUBMIT_SCRIPT_DIR": str(scripts)})
    return sandbox


def finish(runner: subprocess.Popen, timeout: float = 60) -> str:
    """The runner's stderr once it has ended."""
    try:
        return runner.communicate(timeout=timeout)[1]
    finally:
        runner.kill()


NOISY_SCRIPT = """#!/bin/sh
# A script-managed hypervisor whose start writes 1 MiB to stderr before the guest ends.
case "$1" in
  verify) exit 0 ;;
  start)
    head -c 1048576 /dev/zero | tr '\\0' 'x' >&2
    echo >&2
    if [ "$(basename "$0")" = noisy-fails ]; then echo "the noisy guest broke" >&2; exit 1; fi
    echo "condor-vm-exit-status=6" >> "$VMSUBMIT_CONSOLE"
    exit 0 ;;
  *) exit 3 ;;
esac
"""


@pytest.mark.parametrize("hypervisor, code, says", [
    ("noisy", 6, ""),
    ("noisy-fails", 112, "noisy-fails failed to run the guest: the noisy guest broke"),
])
def test_a_script_writing_a_mebibyte_to_stderr_does_not_block_the_job(tmp_path, hypervisor, code, says):
    runner = start_runner(script_job(tmp_path, hypervisor, NOISY_SCRIPT))
    errors = finish(runner)
    assert runner.returncode == code, errors
    assert says in errors and "xxxx" not in errors


EXITING_SCRIPT = """#!/bin/sh
# A script-managed hypervisor whose guest ends at once with status 6.
case "$1" in
  verify) exit 0 ;;
  start) echo "condor-vm-exit-status=6" >> "$VMSUBMIT_CONSOLE"; exit 0 ;;
  *) exit 3 ;;
esac
"""
LIBVIRT_IMPORTED = "libvirt was imported"


@pytest.mark.parametrize("hypervisor, code", [("tiny-hv", 6), (None, 97)], ids=["script-managed", "libvirt"])
def test_a_script_managed_job_never_imports_libvirt(tmp_path, hypervisor, code):
    """The runner, in a process where importing libvirt ends it at once (exit 97, a line on
    stderr): a script-managed job runs to its guest's exit status; a libvirt job cannot."""
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "libvirt.py").write_text(f"import os, sys\nsys.stderr.write({LIBVIRT_IMPORTED!r} + '\\n')\n"
                                     "sys.stderr.flush()\nos._exit(97)\n")
    path = os.pathsep.join(filter(None, [str(trap), os.environ.get("PYTHONPATH")]))
    # A URI of our own: no session daemon is started for the libvirt job that never gets that far.
    runner = start_runner(script_job(tmp_path, hypervisor, EXITING_SCRIPT), "--libvirt-uri", "test:///default",
                          extra_env={"PYTHONPATH": path})
    errors = finish(runner)
    assert runner.returncode == code, errors
    assert (LIBVIRT_IMPORTED in errors) == (hypervisor is None), errors
