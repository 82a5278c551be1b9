"""Eviction in a real HTCondor pool keeps the guest's work (docs/runner.md, "Checkpoints").

A guest that counts on its serial console is vacated three times in a row, held and released,
and has its execute side killed outright (the starter and everything under it: the node
vanished); its console log, which travels with every save, must count on without a restart
from 1 (a boot).  An OVA job is vacated and resumes.

Marked ``pool``; skipped with a reason unless a pool answers, a runner is installed where the
job user can run it (``VMSUBMIT_TEST_RUNNER``, default the documented /usr/local/bin/condor_vm_runner),
and an execute node advertises ``VM_TYPES`` (the project's STARTD_CRON discovery).  The node
should let jobs checkpoint every 20 s (``VMSUBMIT_MIN_CHECKPOINT_INTERVAL = 20``) for the
SIGKILL case to be quick.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from pool import NEEDS_VM_NODE, condor, job_attr, running_count, submit, wait_gone, wait_until

from guest import appliance_ova, bootable_disk, guest_builder

COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.5; done"
pytestmark = NEEDS_VM_NODE


def assert_never_rebooted(seen: list[int]) -> None:
    assert seen == list(range(1, len(seen) + 1)), f"the count restarted: {seen}"


@pytest.fixture
def counter_domain(pool_folder):
    folder, clusters = pool_folder
    builder = guest_builder()
    builder.build_guest(folder)
    builder.write_job_disk(folder / "job.img", COUNTER)
    (folder / "counter.xml").write_text(builder.domain_xml("counter"))
    return folder, clusters


def test_vacated_three_times_the_guest_goes_on_each_time(counter_domain):
    folder, clusters = counter_domain
    cluster = submit("condor_libvirt_submit", folder / "counter.xml", folder / "out")
    clusters.append(cluster)
    target = 5
    for _ in range(3):
        sandbox, seen = running_count(cluster, target)
        condor("condor_vacate_job", str(cluster))
        wait_gone(sandbox)
        target = seen[-1] + 5
    _, seen = running_count(cluster, target)
    assert_never_rebooted(seen)


def test_held_and_released_the_guest_goes_on(counter_domain):
    folder, clusters = counter_domain
    cluster = submit("condor_libvirt_submit", folder / "counter.xml", folder / "out")
    clusters.append(cluster)
    sandbox, seen = running_count(cluster, 5)
    condor("condor_hold", str(cluster))
    wait_gone(sandbox)
    condor("condor_release", str(cluster))
    _, after = running_count(cluster, seen[-1] + 5)
    assert_never_rebooted(after)


def test_a_lost_execute_side_goes_on_from_the_last_periodic_checkpoint(counter_domain):
    folder, clusters = counter_domain
    cluster = submit("condor_libvirt_submit", folder / "counter.xml", folder / "out", "--checkpoint-interval", "20")
    clusters.append(cluster)
    running_count(cluster, 1)
    # the starter counts the uploaded checkpoints in the job ad
    wait_until(lambda: job_attr(cluster, "CheckpointNumber").isdigit(), "a periodic checkpoint uploaded")
    sandbox, seen = running_count(cluster, 1)  # restarted in place, restored
    starter = next(int(part[4:]) for part in sandbox.parts if re.fullmatch(r"dir_\d+", part))  # EXECUTE/dir_<pid>
    for pid in [starter, *_processes_in(sandbox)]:  # the node vanishes: nothing of this run is uploaded
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # gone with the starter already
    # the next start gets the console log uploaded with the checkpoint: it counts on from there
    _, after = running_count(cluster, seen[-1] + 5)
    assert_never_rebooted(after)


def _processes_in(sandbox: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(sandbox) in os.readlink(proc / "cwd"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_an_ova_job_vacated_resumes(counter_domain, tmp_path):
    folder, clusters = counter_domain
    disk = bootable_disk(folder, folder / "boot.img", COUNTER)
    ova = appliance_ova(disk, folder / "counter.ova")
    cluster = submit("condor_ovf_submit", ova, folder / "ova-out")
    clusters.append(cluster)
    sandbox, seen = running_count(cluster, 5)
    condor("condor_vacate_job", str(cluster))
    wait_gone(sandbox)
    _, after = running_count(cluster, seen[-1] + 5)
    assert_never_rebooted(after)
