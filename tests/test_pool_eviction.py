"""Eviction in a real HTCondor pool keeps the guest's work (docs/runner.md, "Checkpoints").

A guest that counts on its serial console is vacated three times in a row, held and released,
and has its execute side killed outright (the starter and everything under it: the node
vanished); its console log, which travels with every save, must count on without a restart
from 1 (a boot).  An OVA job is vacated and resumes.

Marked ``pool``; skipped with a reason unless a pool answers, a runner is installed where the
job user can run it (``VMSUBMIT_TEST_RUNNER``, default /opt/vmsubmit-eviction/bin/condor_vm_runner),
and an execute node advertises ``VM_TYPES`` (the project's STARTD_CRON discovery).  The node
should let jobs checkpoint every 20 s (``VMSUBMIT_MIN_CHECKPOINT_INTERVAL = 20``) for the
SIGKILL case to be quick.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_pool_integration import pool_reachable

from guest import appliance_ova, bootable_disk, counts, guest_builder

RUNNER = os.environ.get("VMSUBMIT_TEST_RUNNER", "/opt/vmsubmit-eviction/bin/condor_vm_runner")
COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.5; done"
WAIT = 600  # seconds for a match, a transfer and a TCG boot on a busy pool (a timeout, not a measurement)


def _why_not() -> str | None:
    why = pool_reachable()
    if why:
        return why
    if not os.access(RUNNER, os.X_OK):
        return f"no runner at {RUNNER} (VMSUBMIT_TEST_RUNNER)"
    types = subprocess.run(["condor_status", "-af", "VM_TYPES"], capture_output=True, text=True).stdout
    if "libvirt-managed" not in types:
        return "no execute node advertises VM_TYPES (examples/condor_config.d/50-vmsubmit-execute.conf)"
    return None


_WHY_NOT = _why_not()
pytestmark = [pytest.mark.pool, pytest.mark.skipif(_WHY_NOT is not None, reason=f"no pool: {_WHY_NOT}")]


def condor(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def submit(frontend: str, source: Path, out: Path, *options: str) -> int:
    env = {**os.environ, "_CONDOR_VMSUBMIT_RUNNER": RUNNER}
    program = str(Path(sys.executable).parent / frontend)  # the frontends installed next to this interpreter
    done = subprocess.run([program, str(source), "--output-dir", str(out), "--hypervisor", "any", *options],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(re.search(r"submitted to cluster (\d+)", done.stdout).group(1))


def status(cluster: int) -> int:
    return int(condor("condor_q", f"{cluster}.0", "-af", "JobStatus").strip() or 4)


def sandbox_of(cluster: int) -> Path | None:
    """The execute sandbox running the job: the folder of the starter's dir_* holding its spec file,
    next to the job ad the starter writes (.job.ad, in the starter's folder or one above)."""
    execute = Path(condor("condor_config_val", "EXECUTE").strip())
    for spec in execute.glob("dir_*/**/vmspec.json"):
        for folder in (spec.parent, *spec.parents):
            ad = folder / ".job.ad"
            if ad.exists():
                if re.search(rf"^ClusterId = {cluster}$", ad.read_text(errors="replace"), re.M):
                    return spec.parent
                break
            if folder == execute:
                break
    return None


def running_count(cluster: int, at_least: int) -> tuple[Path, list[int]]:
    """Wait until the job runs in a sandbox whose console has counted to ``at_least``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sandbox = sandbox_of(cluster)
        if sandbox is not None and status(cluster) == 2:
            seen = counts(sandbox)
            if seen and seen[-1] >= at_least:
                return sandbox, seen
        time.sleep(1)
    raise AssertionError(f"job {cluster} did not count to {at_least} within {WAIT} s")


def assert_never_rebooted(seen: list[int]) -> None:
    assert seen == list(range(1, len(seen) + 1)), f"the count restarted: {seen}"


def wait_gone(sandbox: Path) -> None:
    deadline = time.monotonic() + WAIT
    while sandbox.exists() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture
def counter_domain():
    folder = Path(tempfile.mkdtemp(prefix="cvp", dir="/tmp"))
    folder.chmod(0o755)  # root's submit writes the job's files as the mapped job user
    builder = guest_builder()
    builder.build_guest(folder)
    builder.write_job_disk(folder / "job.img", COUNTER)
    (folder / "counter.xml").write_text(builder.domain_xml("counter"))
    clusters: list[int] = []
    yield folder, clusters
    for cluster in clusters:
        subprocess.run(["condor_rm", str(cluster)], capture_output=True)


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
    deadline = time.monotonic() + WAIT  # the starter counts the uploaded checkpoints in the job ad
    while not condor("condor_q", f"{cluster}.0", "-af", "CheckpointNumber").strip().isdigit():
        assert time.monotonic() < deadline, "no periodic checkpoint was uploaded"
        time.sleep(1)
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
