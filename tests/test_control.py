"""``condor_vm_control`` against real guests: one run by the runner in its own libvirt session,
one run by the qemu-direct admin script; and the errors when no VM runs.

The libvirt guest counts on its console, echoes what it reads from it and answers on port 22
with a banner (busybox nc standing in for sshd).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.control.locate import Process, Runner, find_runner, processes
from condor_vmsubmit.runner.guard import PROCESS_NAME
from condor_vmsubmit.spec import Nic

from guest import (
    counts,
    guest_spec,
    make_sandbox,
    processes_mentioning,
    start_runner,
    stop_and_clean,
    wait_for,
)

BOOT = 120  # seconds a TCG boot may take on a busy machine (a timeout, not a measurement)
COUNTER = "(i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.2; done) &"
INTERACTIVE = ("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; "
               "printf '#!/bin/sh\\necho SSH-2.0-fakeguest\\n' > /banner; chmod +x /banner; "
               "nc -ll -p 22 -e /banner & " + COUNTER +
               ' while read line; do echo "guest read: $line"; done')


def control(sandbox: Path, *args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "condor_vmsubmit.cli.control", "--sandbox", str(sandbox), *args],
                          check=False, capture_output=True, text=True, timeout=timeout, **kwargs)


def control_process(sandbox: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "condor_vmsubmit.cli.control", "--sandbox", str(sandbox),
                             *args], **kwargs)


def read_until(fd: int, text: bytes, timeout: float) -> bytes:
    """Read ``fd`` until ``text`` appears; fail after ``timeout`` seconds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}; got {seen[-500:]!r}"
        readable, _, _ = select.select([fd], [], [], 0.5)
        if readable:
            seen += os.read(fd, 4096)
    return seen


def assert_pause_and_resume(sandbox: Path, count_lines, options: tuple[str, ...] = ()) -> None:
    assert control(sandbox, *options, "pause").returncode == 0
    assert control(sandbox, *options, "status").stdout.startswith("paused")
    time.sleep(1)  # a line the guest was writing when it froze lands
    frozen = len(count_lines())
    time.sleep(2)
    assert len(count_lines()) == frozen, "the guest kept counting while paused"
    assert control(sandbox, *options, "resume").returncode == 0
    wait_for(lambda: len(count_lines()) > frozen + 2, 30, "the guest to count again")
    assert control(sandbox, *options, "status").stdout.startswith("running")


def test_errors_when_no_vm_runs(tmp_path):
    done = control(tmp_path, "status")
    assert done.returncode == 7
    assert done.stderr.startswith("condor_vm_control: error: no VM runs in ") and done.stderr.count("\n") == 1
    (tmp_path / jobcontract.SPEC_FILE).write_text(dataclasses.replace(guest_spec(), hypervisor="qemu-direct").to_json())
    done = control(tmp_path, "--script-dir", str(tmp_path / "none"), "pause")
    assert done.returncode == 3 and "no script for hypervisor 'qemu-direct'" in done.stderr


def test_the_runner_is_found_by_its_guardian_or_its_working_directory(tmp_path):
    runner = Process(20, ("python3", "/usr/local/bin/condor_vm_runner"), tmp_path)
    guardian = Process(10, runner.argv, Path("/tmp/cvm-abc"), PROCESS_NAME, 20)  # a fork of the runner
    elsewhere = Process(30, ("python3", "/usr/local/bin/condor_vm_runner"), tmp_path / "other")
    # a long sandbox path: the session lives in /tmp, the runner works in the sandbox
    assert find_runner(tmp_path, [guardian, runner, elsewhere]) == Runner(20, Path("/tmp/cvm-abc"))
    # --local: the runner works elsewhere, its guardian keeps the session in the sandbox
    local = Process(11, ("python3", "-m", "condor_vmsubmit.runner.guard", str(tmp_path / ".vm"), "99"),
                    tmp_path / ".vm", PROCESS_NAME, 99)
    assert find_runner(tmp_path, [elsewhere, local]) == Runner(99, tmp_path / ".vm")
    assert find_runner(tmp_path, [guardian, elsewhere]) is None
    # a guardian whose runner is gone (adopted by pid 1 while it cleans up) names no runner
    orphan = Process(12, runner.argv, tmp_path / ".vm", PROCESS_NAME, 1)
    assert find_runner(tmp_path, [orphan, Process(1, ("/sbin/init",), Path("/"))]) is None



def test_processes_are_read_whatever_their_names(tmp_path):
    """A process name is any bytes, ")" and non-UTF-8 included (the guardian's clean-up and
    condor_vm_control read every process's stat)."""
    entry = tmp_path / "4242"
    entry.mkdir()
    (entry / "cmdline").write_bytes(b"python3\0-m\0condor_vmsubmit.runner\0")
    (entry / "stat").write_bytes(b"4242 (odd) n\xffame) S 77 4242 4242 0 -1")
    (entry / "cwd").symlink_to(tmp_path)
    assert list(processes(tmp_path)) == [Process(4242, ("python3", "-m", "condor_vmsubmit.runner"), tmp_path,
                                                 "odd) n\ufffdame", 77)]


@pytest.fixture(scope="module")
def libvirt_job(guest_dir):
    """A runner-run guest with its NIC up, counting, echoing its console and answering on port 22."""
    spec = dataclasses.replace(guest_spec(), nics=(Nic(model="virtio", link="up"),))
    sandbox = make_sandbox(guest_dir, INTERACTIVE, job_id="61.0", spec=spec)
    runner = start_runner(sandbox)
    wait_for(lambda: len(counts(sandbox)) >= 3, BOOT, "the guest to count", runner)
    yield sandbox
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    wait_for(lambda: not processes_mentioning(f"--sandbox {sandbox} "), 30, "the ssh forwarder to end with the guest")
    assert not (sandbox / "vm-ssh.sock").exists()
    stop_and_clean(runner, sandbox)


@pytest.mark.guest
def test_status_pause_and_resume_in_the_jobs_own_session(libvirt_job):
    done = control(libvirt_job, "status")
    assert done.returncode == 0 and done.stdout.startswith("running (libvirt domain cvm-"), done.stderr
    described = json.loads(control(libvirt_job, "status", "--json").stdout)
    assert described["state"] == "running" and described["backend"] == "libvirt"
    assert_pause_and_resume(libvirt_job, lambda: counts(libvirt_job))


@pytest.mark.guest
def test_console_is_interactive_and_ctrl_bracket_detaches(libvirt_job):
    master, slave = pty.openpty()
    tool = control_process(libvirt_job, "console", stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        read_until(master, b"count=", 30)
        os.write(master, b"hello from the user\r")
        read_until(master, b"guest read: hello from the user", 30)
        os.write(master, b"\x1d")
        _, stderr = tool.communicate(timeout=30)
    finally:
        if tool.poll() is None:
            tool.kill()
        os.close(master)
    assert tool.returncode == 0 and "detached" in stderr.decode()
    assert "guest read: hello from the user" in (libvirt_job / jobcontract.CONSOLE_LOG_FILE).read_text()


@pytest.mark.guest
def test_console_follow_prints_the_log_as_it_grows(libvirt_job):
    tool = control_process(libvirt_job, "console", "--follow", "--lines", "1", stdout=subprocess.PIPE)
    seen = b""
    try:
        while len(re.findall(rb"count=(\d+)\r?\n", seen)) < 5:
            seen += read_until(tool.stdout.fileno(), b"\n", 10)
    finally:
        tool.send_signal(signal.SIGINT)
        tool.wait(timeout=10)
    numbers = [int(n) for n in re.findall(rb"count=(\d+)\r?\n", seen)]
    assert numbers == sorted(numbers) and numbers[-1] > numbers[0]


@pytest.mark.guest
def test_ssh_port_on_a_unix_socket_and_as_a_proxy_command(libvirt_job):
    done = control(libvirt_job, "ssh-socket", "--background")
    assert done.returncode == 0, done.stderr
    path = libvirt_job / "vm-ssh.sock"
    assert "already forwards" in control(libvirt_job, "ssh-socket", "--background").stdout
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    for _ in range(2):  # every connection is relayed, one after the other
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(30)
            client.connect(str(path))
            assert client.makefile("rb").readline() == b"SSH-2.0-fakeguest\n"
    proxy = control_process(libvirt_job, "ssh-proxy", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert read_until(proxy.stdout.fileno(), b"\n", 30) == b"SSH-2.0-fakeguest\n"
    finally:
        proxy.kill()
        proxy.wait()


@pytest.mark.guest
@pytest.mark.parametrize("proxy", ["nc -U vm-ssh.sock", f"{sys.executable} -m condor_vmsubmit.cli.control ssh-proxy"])
def test_the_ssh_client_reaches_the_guest_as_documented(libvirt_job, proxy):
    """OpenSSH through the documented ProxyCommands reads the guest's banner (the stand-in sshd
    then hangs up: there is no real sshd in the test guest)."""
    for tool in ("ssh", "nc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not (libvirt_job / "vm-ssh.sock").exists():
        assert control(libvirt_job, "ssh-socket", "--background").returncode == 0
    done = subprocess.run(["ssh", "-v", "-o", f"ProxyCommand={proxy}", "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "root@guest", "true"],
                          cwd=libvirt_job, env={**os.environ, "_CONDOR_SCRATCH_DIR": str(libvirt_job)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert "remote software version fakeguest" in done.stderr, done.stderr


@pytest.mark.guest
def test_checkpoint_goes_through_the_runner_and_the_restarted_job_continues(guest_dir):
    sandbox = make_sandbox(guest_dir, COUNTER + " wait", job_id="62.0")
    runner = start_runner(sandbox)
    again = None
    try:
        wait_for(lambda: len(counts(sandbox)) >= 3, BOOT, "the guest to count", runner)
        done = control(sandbox, "checkpoint", timeout=BOOT)
        assert done.returncode == 0 and "checkpoint exit code 85" in done.stdout, done.stderr
        assert runner.wait(timeout=10) == jobcontract.EXIT_CHECKPOINTED
        assert (sandbox / jobcontract.CHECKPOINT_DIR / "guest.save").stat().st_size > 0
        before = counts(sandbox)

        again = start_runner(sandbox)  # what HTCondor does after the checkpoint exit code
        wait_for(lambda: len(counts(sandbox)) >= len(before) + 3, BOOT, "the restored guest to count on", again)
        assert counts(sandbox)[len(before)] > before[-1]
        stopped = control(sandbox, "stop", "--timeout", "2")
        assert stopped.returncode == 8 and "did not power off within 2 s" in stopped.stderr
        assert control(sandbox, "stop", "--force").returncode == 0
        assert again.wait(timeout=30) == 130
        assert control(sandbox, "status").returncode == 7
    finally:
        for process in (runner, again):
            if process is not None:
                stop_and_clean(process, sandbox)


@pytest.mark.guest
def test_a_script_managed_guest_through_its_admin_script(guest_dir, script_dir):
    spec = dataclasses.replace(guest_spec(), hypervisor="qemu-direct", nics=())
    sandbox = make_sandbox(guest_dir, COUNTER + " wait", job_id="63.0", spec=spec)
    runner = start_runner(sandbox, knobs={"VMSUBMIT_SCRIPT_DIR": str(script_dir)})
    with_scripts = ("--script-dir", str(script_dir))
    try:
        wait_for(lambda: len(counts(sandbox)) >= 3, BOOT, "the guest to count", runner)
        done = control(sandbox, *with_scripts, "status")
        assert done.stdout.startswith(f"running (script {script_dir / 'qemu-direct'}, runner pid {runner.pid})")
        assert_pause_and_resume(sandbox, lambda: counts(sandbox), with_scripts)
        tool = control_process(sandbox, *with_scripts, "console", stdout=subprocess.PIPE)
        try:
            read_until(tool.stdout.fileno(), b"count=", 10)  # a file-only console is followed
        finally:
            tool.send_signal(signal.SIGINT)
            tool.wait(timeout=10)
        done = control(sandbox, *with_scripts, "checkpoint", timeout=BOOT)
        assert done.returncode == 0 and "checkpoint exit code 85" in done.stdout, done.stderr
        assert runner.wait(timeout=10) == jobcontract.EXIT_CHECKPOINTED
        assert (sandbox / jobcontract.CHECKPOINT_DIR / "qemu-direct.state").stat().st_size > 0
        refused = control(sandbox, *with_scripts, "status")
        assert refused.returncode == 8 and "no guest is running" in refused.stderr
    finally:
        stop_and_clean(runner, sandbox)
