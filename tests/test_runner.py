"""The execute-side runner with real guests under QEMU/TCG, each in its own libvirt session.

The guest (examples/guest) runs the shell script on its job disk, prints
``condor-vm-exit-status=N`` and powers off; see tests/guest.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.domain.render import domain_name
from condor_vmsubmit.runner.libvirt_backend import save_image_complete

from guest import (
    FakeChirp,
    console,
    counts,
    descendants,
    guest_builder,
    make_sandbox,
    processes_mentioning,
    processes_working_in,
    qemu_of,
    start_runner,
    stop_and_clean,
    wait_for,
)

pytestmark = pytest.mark.guest

COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.2; done"
BOOT = 120  # seconds a TCG boot may take on a busy machine (a timeout, not a measurement)


@pytest.fixture
def sandboxes():
    made: list[tuple] = []
    yield made
    for runner, sandbox in made:
        stop_and_clean(runner, sandbox)


def run_guest(guest_dir: Path, sandboxes: list, script: str, job_id: str, *args: str,
              extra_env: dict[str, str] | None = None, **kwargs):
    sandbox = make_sandbox(guest_dir, script, job_id=job_id, **kwargs)
    runner = start_runner(sandbox, *args, extra_env=extra_env)
    sandboxes.append((runner, sandbox))
    return runner, sandbox


def assert_nothing_left(job_id: str, sandbox: Path) -> None:
    name = domain_name(f"test#{job_id}#1")
    wait_for(lambda: not processes_mentioning(name) and not processes_mentioning(str(sandbox / ".vm"))
             and not processes_working_in(sandbox / ".vm"), 30, "the job's QEMU, libvirtd and guardian to go away")
    wait_for(lambda: not (sandbox / ".vm").exists(), 30, "the runner's state folder to be removed")


def test_guest_exit_status_becomes_the_exit_code(guest_dir, sandboxes):
    script = "ip link set eth0 up; sleep 0.5; echo carrier=$(cat /sys/class/net/eth0/carrier); echo hello; exit 7"
    runner, sandbox = run_guest(guest_dir, sandboxes, script, "1.0", "--usage-interval", "1")
    stdout, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 7, stderr
    assert "hello" in console(sandbox).splitlines()
    assert "carrier=0" in console(sandbox).splitlines()  # the spec's NIC has its link down
    assert "condor-vm-exit-status=7" in console(sandbox)
    assert stdout == console(sandbox)  # the console also went to the job's output, all of it
    assert "usage: ChirpVMCpuSeconds=" in stderr
    assert_nothing_left("1.0", sandbox)


def test_a_sandbox_path_too_long_for_sockets_keeps_the_session_in_a_short_folder(guest_dir, sandboxes):
    sandbox = make_sandbox(guest_dir, "exit 0", job_id="9.0")
    deep = sandbox / ("execute-" + "d" * 60) / "dir_123456"  # libvirt's sockets would not fit below it
    deep.mkdir(parents=True)
    for entry in list(sandbox.iterdir()):
        if entry.is_file():
            entry.rename(deep / entry.name)
    before = set(Path("/tmp").glob("cvm-*"))
    runner = start_runner(deep, knobs={})  # the node configuration moved with the files
    sandboxes.append((runner, sandbox))
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 0, stderr
    assert "condor-vm-exit-status=0" in console(deep)
    wait_for(lambda: set(Path("/tmp").glob("cvm-*")) <= before, 30, "the short session folder to be removed")
    assert not (deep / ".vm").exists()


def test_sigterm_checkpoints_and_the_next_start_continues_the_count(guest_dir, sandboxes):
    runner, sandbox = run_guest(guest_dir, sandboxes, COUNTER, "2.0")
    wait_for(lambda: len(counts(sandbox)) >= 5, BOOT, "the guest to count", runner)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
    saved = sandbox / jobcontract.CHECKPOINT_DIR / "guest.save"
    assert save_image_complete(saved) and not saved.with_suffix(".partial").exists()
    before = counts(sandbox)
    assert_nothing_left("2.0", sandbox)

    again = start_runner(sandbox)
    sandboxes.append((again, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= len(before) + 5, BOOT, "the restored guest to count on", again)
    after = counts(sandbox)[len(before):]
    assert after[0] == before[-1] + 1, (before[-3:], after[:3])
    assert after == list(range(after[0], after[0] + len(after)))
    assert not (sandbox / jobcontract.CHECKPOINT_DIR / "guest.save").exists()
    again.send_signal(signal.SIGINT)
    out, _ = again.communicate(timeout=BOOT)
    streamed = [line for line in out.splitlines() if line.startswith("count=")]
    assert streamed and streamed[0] == f"count={after[0]}"  # the job's output: only what this start ran


def test_stopping_the_runner_pauses_the_guest_and_sigkill_leaves_nothing(guest_dir, sandboxes):
    runner, sandbox = run_guest(guest_dir, sandboxes, COUNTER, "3.0")
    wait_for(lambda: len(counts(sandbox)) >= 3, BOOT, "the guest to count", runner)
    qemu = qemu_of("3.0")
    assert len(qemu) == 1 and qemu[0] in descendants(runner.pid), "QEMU must stay in the job's process tree"

    os.killpg(runner.pid, signal.SIGSTOP)  # what a suspend does to the job
    time.sleep(1.5)  # the guest notices within a poll
    frozen = len(counts(sandbox))
    time.sleep(2)
    assert len(counts(sandbox)) == frozen, "the guest kept counting while the job was suspended"
    os.killpg(runner.pid, signal.SIGCONT)
    wait_for(lambda: len(counts(sandbox)) > frozen + 2, 30, "the guest to count again after the resume", runner)

    session = set(processes_working_in(sandbox / ".vm"))
    assert len(session) == 2 and session <= descendants(runner.pid), "the guardian and libvirtd work in .vm/"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert_nothing_left("3.0", sandbox)
    assert not qemu_of("3.0")


def test_the_jobs_libvirtd_loads_the_qemu_driver_alone(guest_dir, sandboxes):
    runner, sandbox = run_guest(guest_dir, sandboxes, COUNTER, "3.1")
    wait_for(lambda: len(counts(sandbox)) >= 1, BOOT, "the guest to count", runner)
    daemons = [pid for pid in descendants(runner.pid) if os.path.realpath(f"/proc/{pid}/exe") == "/usr/sbin/libvirtd"]
    assert len(daemons) == 1, daemons
    drivers = {Path(line.split()[-1]).name for line in Path(f"/proc/{daemons[0]}/maps").read_text().splitlines()
               if "/connection-driver/" in line}
    assert drivers == {"libvirt_driver_qemu.so"}
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=60)


def test_a_crash_of_the_emulator_is_reported(guest_dir, sandboxes):
    runner, sandbox = run_guest(guest_dir, sandboxes, COUNTER, "4.0")
    wait_for(lambda: len(counts(sandbox)) >= 1, BOOT, "the guest to count", runner)
    for pid in qemu_of("4.0"):
        os.kill(pid, signal.SIGKILL)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == jobcontract.EXIT_GUEST_CRASHED
    assert "emulator failed" in stderr
    assert_nothing_left("4.0", sandbox)


def test_three_guests_at_once_keep_to_themselves(guest_dir, sandboxes):
    replayed = guest_builder().domain_xml("same-name-for-all", job_disk="/elsewhere/job.img",
                                          kernel="/boot/vmlinuz", initrd="/boot/initrd.img")
    runs = [run_guest(guest_dir, sandboxes, f"echo I am job {n}; exit {n}", f"5.{n}", domain_xml=replayed)
            for n in (3, 4, 5)]
    for n, (runner, sandbox) in zip((3, 4, 5), runs, strict=True):
        _, stderr = runner.communicate(timeout=BOOT * 2)
        assert runner.returncode == n, stderr
        text = console(sandbox)
        assert f"I am job {n}" in text and all(f"I am job {m}" not in text for m in (3, 4, 5) if m != n)
        assert "replayed as user-mode networking" not in stderr
    for n, (_, sandbox) in zip((3, 4, 5), runs, strict=True):
        assert_nothing_left(f"5.{n}", sandbox)


def test_usage_and_hold_reasons_reach_the_job_ad_through_chirp(guest_dir, sandboxes, tmp_path):
    chirp = FakeChirp(tmp_path)
    try:
        runner, _ = run_guest(guest_dir, sandboxes, "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; exit 0",
                              "8.0", "--usage-interval", "1", extra_env={"_CONDOR_CHIRP_CONFIG": str(chirp.config)})
        _, stderr = runner.communicate(timeout=BOOT)
        assert runner.returncode == 0, stderr
        assert "cookie secret-cookie" in chirp.commands
        cpu = [int(v) for v in chirp.attrs("ChirpVMCpuSeconds", delayed=True)]
        assert cpu and cpu[-1] >= 1, chirp.commands
        assert [int(v) for v in chirp.attrs("ChirpVMMemoryBytes", delayed=True)][-1] == 128 << 20
        # delayed updates only: no "Setting job attribute" event in the user log for each
        assert not any(c.startswith("set_job_attr ") for c in chirp.commands), chirp.commands
        assert "usage:" not in stderr  # with chirp, usage goes to the job ad

        # a node whose CHIRP_DELAYED_UPDATE_PREFIX leaves them out: usage on stderr, said once why
        sent = len(chirp.commands)
        runner, _ = run_guest(guest_dir, sandboxes, "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 0",
                              "8.2", "--usage-interval", "1",
                              extra_env={"_CONDOR_CHIRP_CONFIG": str(chirp.config),
                                         "_CHIRP_DELAYED_UPDATE_PREFIX": "Foo*"})
        _, stderr = runner.communicate(timeout=BOOT)
        assert runner.returncode == 0, stderr
        assert "CHIRP_DELAYED_UPDATE_PREFIX (Foo*) does not admit ChirpVMCpuSeconds" in stderr
        assert "usage: ChirpVMCpuSeconds=" in stderr
        assert not any("ChirpVM" in c for c in chirp.commands[sent:]), chirp.commands[sent:]

        xml = guest_builder().domain_xml("hostile").replace("<devices>", "<devices><emulator>/tmp/x</emulator>")
        runner, _ = run_guest(guest_dir, sandboxes, "exit 0", "8.1", domain_xml=xml,
                              extra_env={"_CONDOR_CHIRP_CONFIG": str(chirp.config)})
        runner.communicate(timeout=60)
        assert runner.returncode == jobcontract.EXIT_REFUSED
        reason = chirp.attrs(jobcontract.HOLD_REASON_ATTR)
        assert len(reason) == 1 and "emulator" in reason[0] and reason[0].startswith('"refused:')
    finally:
        chirp.close()


HOSTILE = {
    "qemu:commandline": ("<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
                         "<qemu:arg value='-monitor'/></qemu:commandline>", ""),
    "custom emulator": ("", "<emulator>/tmp/evil-qemu</emulator>"),
    "disk outside the sandbox": ("", "<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
                                     "<source dev='/dev/sda'/><target dev='vdb' bus='virtio'/></disk>"),
    "hostdev": ("", "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='1' "
                    "function='0'/></source></hostdev>"),
    "direct interface": ("", "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>"),
    "vnc on all addresses": ("", "<graphics type='vnc' listen='0.0.0.0'/>"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_is_refused_before_anything_starts(guest_dir, sandboxes, case):
    top, device = HOSTILE[case]
    xml = guest_builder().domain_xml("hostile").replace("<devices>", f"<devices>{device}")
    xml = xml.replace("</domain>", f"{top}</domain>")
    runner, sandbox = run_guest(guest_dir, sandboxes, "exit 0", "6.0", domain_xml=xml)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == jobcontract.EXIT_REFUSED, stderr
    assert "refused" in stderr
    assert not console(sandbox)  # nothing ran: the console log is empty (it exists: an output file)


def test_a_start_failure_holds_the_job(guest_dir, sandboxes):
    xml = guest_builder().domain_xml("bad-machine").replace("<type arch='x86_64'>",
                                                            "<type arch='x86_64' machine='pc-no-such-9.9'>")
    runner, _ = run_guest(guest_dir, sandboxes, "exit 0", "7.0", domain_xml=xml)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == jobcontract.EXIT_START_FAILED, stderr
    assert "did not start" in stderr
