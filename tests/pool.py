"""Helpers for the tests that run jobs in a real HTCondor pool (marked ``pool``; docs/testing.md).

A test module marks itself with :data:`NEEDS_POOL` (any answering pool) or :data:`NEEDS_VM_NODE`
(one whose execute node runs the project's runner and discovery); without one, its tests skip
with the reason.  Jobs are submitted by the frontends installed next to this interpreter, from
folders the job user can write: the pool runs root's jobs as an unprivileged user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract

from guest import counts

RUNNER = os.environ.get("VMSUBMIT_TEST_RUNNER", jobcontract.DEFAULT_RUNNER)
WAIT = float(os.environ.get("VMSUBMIT_POOL_TIMEOUT", "900"))  # a match, a transfer and a TCG boot on a busy pool


def pool_reachable() -> str | None:
    """Why no pool can be used, or None when one answers."""
    # importing htcondor2 without a configuration sets CONDOR_CONFIG to /dev/null
    if os.environ.get("CONDOR_CONFIG") in (None, "", os.devnull):
        return "CONDOR_CONFIG is not set"
    if not shutil.which("condor_q"):
        return "condor_q is not installed"
    try:
        answer = subprocess.run(["condor_q", "-totals"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "condor_q timed out"
    return None if answer.returncode == 0 else f"condor_q failed: {answer.stderr.strip()[:200]}"


def vm_node_missing() -> str | None:
    """Why no execute node of the pool can run this project's jobs, or None."""
    why = pool_reachable()
    if why:
        return why
    if not os.access(RUNNER, os.X_OK):
        return f"no runner at {RUNNER} (VMSUBMIT_TEST_RUNNER)"
    types = subprocess.run(["condor_status", "-af", "VM_TYPES"], capture_output=True, text=True).stdout
    if "libvirt-managed" not in types:
        return "no execute node advertises VM_TYPES (examples/condor_config.d/50-vmsubmit-execute.conf)"
    return None


def _mark(why: str | None) -> list:
    return [pytest.mark.pool, pytest.mark.skipif(why is not None, reason=f"no pool: {why}")]


NEEDS_POOL = _mark(pool_reachable())
NEEDS_VM_NODE = _mark(vm_node_missing())


def condor(*args: str) -> str:
    """Run an HTCondor tool; its standard output (it must succeed)."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def submit(frontend: str, source: Path, out: Path, *options: str) -> int:
    """Submit ``source`` with ``frontend`` (any hypervisor, the tested runner); the cluster id."""
    env = {**os.environ, "_CONDOR_VMSUBMIT_RUNNER": RUNNER}
    out.mkdir(mode=0o777, exist_ok=True)
    out.chmod(0o777)  # the schedd and shadow write the log and the output as the job user, not as root
    program = str(Path(sys.executable).parent / frontend)  # the frontends installed next to this interpreter
    done = subprocess.run([program, str(source), "--output-dir", str(out), "--hypervisor", "any", *options],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    cluster = int(re.search(r"submitted to cluster (\d+)", done.stdout).group(1))
    # A pool that runs root's jobs as another user brings their output back as that user, who must
    # own what the frontend wrote (an OVA's extracted disks come back over themselves).  The schedd
    # writes the user log as that user at once: its owner is the job user.
    wait_until(lambda: any(out.glob("*.log")), f"the user log of job {cluster}", timeout=60)
    owner = next(out.glob("*.log")).stat()
    for path in out.rglob("*"):
        os.chown(path, owner.st_uid, owner.st_gid)
    return cluster


def job_attr(cluster: int, name: str) -> str:
    """The attribute ``name`` of job ``cluster``.0 as condor_q prints it ("undefined" when unset)."""
    return condor("condor_q", f"{cluster}.0", "-af", name).strip()


def status(cluster: int) -> int:
    """The job's JobStatus (4, completed, once it left the queue)."""
    return int(job_attr(cluster, "JobStatus") or 4)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)


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
    found: list[tuple[Path, list[int]]] = []

    def counted() -> bool:
        sandbox = sandbox_of(cluster)
        if sandbox is not None and status(cluster) == 2 and (seen := counts(sandbox)) and seen[-1] >= at_least:
            found.append((sandbox, seen))
        return bool(found)

    wait_until(counted, f"job {cluster} counting to {at_least}")
    return found[0]


def wait_gone(sandbox: Path) -> None:
    wait_until(lambda: not sandbox.exists(), f"{sandbox} removed")
