"""Eviction keeps the guest's work, on this machine, through the runner as the starter runs it.

What HTCondor does between two starts is played by the test, as docs/runner.md ("Checkpoints")
describes it: after a periodic checkpoint (exit 85 on the runner's own) HTCondor uploads the
checkpoint files and restarts the runner in the same sandbox; after a node is lost (SIGKILL) the
next start gets the input files plus the last uploaded checkpoint files.  tests/test_pool_eviction.py
checks the same against a real pool.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.formats import load
from condor_vmsubmit.formats.ovf.extract import extract_disks
from condor_vmsubmit.images.diskimage import read_image
from condor_vmsubmit.runner.libvirt_backend import save_image_complete
from condor_vmsubmit.spec import Disk

from guest import appliance_ova, bootable_disk, counts, guest_spec, make_sandbox, start_runner, stop_and_clean, wait_for

pytestmark = pytest.mark.guest

COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.2; done"
BOOT = 120  # seconds a TCG boot may take on a busy machine (a timeout, not a measurement)
QUICK = {"VMSUBMIT_MIN_CHECKPOINT_INTERVAL": "1"}  # the node lets this job checkpoint every few seconds


@pytest.fixture
def runners():
    made: list[tuple] = []
    yield made
    for runner, sandbox in made:
        stop_and_clean(runner, sandbox)


def ask_interval(sandbox: Path, seconds: int) -> None:
    """Give the job ad the checkpoint interval the translator writes (``MY.VMCheckpointInterval``)."""
    ad = sandbox / "job.ad"
    lines = [line for line in ad.read_text().splitlines() if not line.startswith(jobcontract.CHECKPOINT_INTERVAL_ATTR)]
    ad.write_text("\n".join(lines + [f"{jobcontract.CHECKPOINT_INTERVAL_ATTR} = {seconds}"]) + "\n")


def upload_checkpoint(sandbox: Path, spool: Path, files: list[str]) -> None:
    """What HTCondor does with transfer_checkpoint_files after exit 85: copy them to the spool."""
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir()
    for name in files:
        source = sandbox / name
        if source.is_dir():
            shutil.copytree(source, spool / name)
        else:
            shutil.copy2(source, spool / name)


def test_a_periodic_checkpoint_restarts_in_place_and_a_lost_node_goes_on_from_it(guest_dir, runners, tmp_path):
    sandbox = make_sandbox(guest_dir, COUNTER, job_id="40.0")
    ask_interval(sandbox, 15)  # counted from the guest's start, which takes 3-6 s under TCG here
    runner = start_runner(sandbox, knobs=QUICK)
    runners.append((runner, sandbox))
    _, stderr = runner.communicate(timeout=BOOT)  # no signal: the runner checkpoints on its own
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
    assert "periodic checkpoint" in stderr and counts(sandbox), stderr
    assert save_image_complete(sandbox / jobcontract.CHECKPOINT_DIR / "guest.save")
    checkpointed = counts(sandbox)[-1]
    upload_checkpoint(sandbox, tmp_path / "spool",
                      [jobcontract.CHECKPOINT_DIR, jobcontract.CONSOLE_LOG_FILE, "job.img"])

    ask_interval(sandbox, 0)  # this run must not checkpoint again before the test kills it
    again = start_runner(sandbox, knobs=QUICK)  # HTCondor restarts the job in place
    runners.append((again, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= len(counts(tmp_path / "spool")) + 10, BOOT,
             "the restored guest to count on", again)
    restored = counts(sandbox)[len(counts(tmp_path / "spool")):]
    assert restored[0] == checkpointed + 1, (checkpointed, restored[:3])
    os.killpg(again.pid, signal.SIGKILL)  # the node vanishes: nothing is uploaded
    again.wait()
    lost = counts(sandbox)[-1]

    elsewhere = make_sandbox(guest_dir, COUNTER, job_id="40.0")  # the next start: input files + spool
    shutil.rmtree(elsewhere / jobcontract.CHECKPOINT_DIR, ignore_errors=True)
    shutil.copytree(tmp_path / "spool", elsewhere, dirs_exist_ok=True)
    third = start_runner(elsewhere)
    runners.append((third, elsewhere))
    before = len(counts(elsewhere))
    wait_for(lambda: len(counts(elsewhere)) >= before + 5, BOOT, "the guest to go on from its checkpoint", third)
    resumed = counts(elsewhere)[before:]
    assert resumed[0] == checkpointed + 1 < lost, (checkpointed, lost, resumed[:3])
    third.send_signal(signal.SIGINT)
    third.communicate(timeout=BOOT)


def to_vmdk(raw: Path, vmdk: Path, subformat: str = "streamOptimized") -> None:
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}",
                    str(raw), str(vmdk)], check=True)


def test_a_vmdk_guest_is_converted_then_saved_and_restored(guest_dir, runners):
    spec = guest_spec("vmdk-guest")
    spec = replace(spec, disks=(Disk(bus="virtio", format="vmdk", source="/home/user/vm/job.vmdk"),))
    sandbox = make_sandbox(guest_dir, COUNTER, job_id="41.0", spec=spec)
    to_vmdk(sandbox / "job.img", sandbox / "job.vmdk")
    (sandbox / "job.img").unlink()
    runner = start_runner(sandbox)
    runners.append((runner, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= 5, BOOT, "the guest to count from its vmdk disk", runner)
    assert read_image(sandbox / "job.vmdk").format == "qcow2"  # converted in place, under the name that travels
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=BOOT)
    # QEMU saves it: no "does not support live migration"
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
    assert "converted to qcow2 so that the guest can be checkpointed: job.vmdk" in stderr
    before = counts(sandbox)

    again = start_runner(sandbox)  # finds job.vmdk converted already: adopts it, converts nothing
    runners.append((again, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= len(before) + 5, BOOT, "the restored guest to count on", again)
    assert counts(sandbox)[len(before)] == before[-1] + 1
    again.send_signal(signal.SIGINT)
    _, stderr = again.communicate(timeout=BOOT)
    assert "converted to" not in stderr


def test_an_ova_guest_booting_from_its_vmdk_is_saved_and_restored(guest_dir, runners, tmp_path):
    ova = appliance_ova(bootable_disk(guest_dir, tmp_path / "boot.img", COUNTER), tmp_path / "counter.ova")
    spec = load(ova)
    extracted = extract_disks(spec, tmp_path / "extracted")  # as condor_ovf_submit does: the vmdk out of the tar
    spec = extracted.apply(spec)
    sandbox = make_sandbox(guest_dir, "", job_id="42.0", spec=spec)  # no kernel boot: the disk boots
    for path in extracted.paths.values():
        shutil.copy2(path, sandbox / path.name)
    runner = start_runner(sandbox)
    runners.append((runner, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= 5, BOOT, "the appliance to boot and count", runner)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
    before = counts(sandbox)

    again = start_runner(sandbox)
    runners.append((again, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= len(before) + 5, BOOT, "the restored appliance to count on", again)
    assert counts(sandbox)[len(before)] == before[-1] + 1
    again.send_signal(signal.SIGINT)
    again.communicate(timeout=BOOT)
