"""Against a real pool: the discovery attributes reach the startd ads, and a job submitted with
``condor_libvirt_submit`` matches, runs through ``condor_vm_runner``, boots its guest and ends
with the guest's exit status.

Needs ``CONDOR_CONFIG`` naming a pool whose ``condor_q`` answers, execute nodes set up as
docs/admin-guide.md says, and a submitter other than root.  Skipped with the reason otherwise.
``VMSUBMIT_POOL_TIMEOUT`` (seconds, default 900) bounds the wait for the job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import classad2
import pytest

REPO = Path(__file__).resolve().parents[1]
GUEST_EXIT_STATUS = 7


def no_pool_reason() -> str | None:
    """Why there is no pool to test against, or None."""
    # importing htcondor2 without a configuration sets CONDOR_CONFIG to /dev/null
    if os.environ.get("CONDOR_CONFIG") in (None, "", "/dev/null"):
        return "CONDOR_CONFIG is not set: no HTCondor pool to test against"
    condor_q = shutil.which("condor_q")
    if condor_q is None:
        return "condor_q is not installed"
    try:
        done = subprocess.run([condor_q, "-totals"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "condor_q did not answer within 30 s"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"condor_q failed: {lines[-1] if lines else done.returncode}"
    return None


_REASON = no_pool_reason()
pytestmark = [pytest.mark.pool, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def vm_startds() -> list:
    import htcondor2

    return htcondor2.Collector().query(
        htcondor2.AdType.Startd, constraint="VM_RUNNER_VERSION =!= undefined",
        projection=["Name", "VM_TYPES", "VM_HYPERVISORS", "VM_RUNNER_VERSION", "VM_DISCOVERY_ERROR",
                    "VM_DISCOVERY_NOTES"])


def test_the_cron_attributes_are_in_the_startd_ads() -> None:
    ads = vm_startds()
    assert ads, "no startd advertises VM_RUNNER_VERSION: is 50-vmsubmit-execute.conf installed?"
    for ad in ads:
        assert isinstance(ad["VM_TYPES"], str) and isinstance(ad["VM_HYPERVISORS"], str), ad["Name"]
        if "libvirt-managed" in ad["VM_TYPES"].split(","):
            assert ad.get("VM_DISCOVERY_ERROR") in (None, classad2.Value.Undefined), ad["Name"]


def test_a_submitted_vm_boots_and_ends_with_the_guest_exit_status(tmp_path: Path) -> None:
    import htcondor2

    if os.geteuid() == 0:
        pytest.skip("HTCondor does not run jobs submitted by root")
    hypervisors = {h for ad in vm_startds() for h in ad["VM_HYPERVISORS"].split(",") if h}
    hypervisor = "qemu" if "qemu" in hypervisors else "any"
    guest = tmp_path / "guest"
    subprocess.run([sys.executable, str(REPO / "examples" / "guest" / "build_guest.py"), str(guest),
                    "--name", "pool-guest", "--job", f"echo hello from the guest; exit {GUEST_EXIT_STATUS}"],
                   check=True, capture_output=True)
    out = tmp_path / "out"
    command = ["condor_libvirt_submit", str(guest / "domain.xml"), "--hypervisor", hypervisor,
               "--output-dir", str(out)]
    submitted = subprocess.run(command, capture_output=True, text=True, check=False)
    assert submitted.returncode == 0, submitted.stderr
    cluster = int(re.search(r"submitted to cluster (\d+)", submitted.stdout).group(1))
    limit = float(os.environ.get("VMSUBMIT_POOL_TIMEOUT", "900"))
    end = time.monotonic() + limit
    outcome = None
    try:
        while not (out / "pool-guest.log").exists() and time.monotonic() < end:
            time.sleep(1)  # written once the job is queued
        log = htcondor2.JobEventLog(str(out / "pool-guest.log"))
        while outcome is None and time.monotonic() < end:
            for event in log.events(stop_after=5):
                if event.type == htcondor2.JobEventType.JOB_TERMINATED:
                    outcome = ("exit", event.get("ReturnValue"))
                elif event.type in (htcondor2.JobEventType.JOB_HELD, htcondor2.JobEventType.JOB_ABORTED):
                    outcome = ("stopped", event.get("HoldReason") or str(event.type))
        assert outcome is not None, f"job {cluster} did not finish within {limit:.0f} s"
        assert outcome == ("exit", GUEST_EXIT_STATUS), outcome
        output = (out / f"pool-guest.{cluster}.0.out").read_text(errors="replace")
        assert "hello from the guest" in output  # the console, streamed into the job's output
    finally:
        if outcome is None or outcome[0] != "exit":  # still queued, or held: leave nothing behind
            htcondor2.Schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
