"""A disk with a backing chain the user declared (--allow-backing) boots through the runner;
the same chain undeclared is refused before anything starts."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.spec import Disk

from guest import guest_spec, make_sandbox, start_runner

pytestmark = pytest.mark.guest

def chained_sandbox(guest_dir, job_id: str, declared: bool):
    """A sandbox whose job disk is a qcow2 overlay over the raw disk holding the job's script."""
    spec = guest_spec("chained")
    sandbox = make_sandbox(guest_dir, "echo read through the chain; exit 4", job_id=job_id, spec=spec)
    (sandbox / "job.img").rename(sandbox / "base.img")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", "base.img", "-F", "raw",
                    str(sandbox / "job.qcow2")], check=True, capture_output=True)
    disk = Disk(bus="virtio", format="qcow2", source="/home/user/vm/job.qcow2",
                backing="base.img" if declared else None)
    (sandbox / jobcontract.SPEC_FILE).write_text(replace(spec, disks=(disk,)).to_json())
    return sandbox

def test_a_declared_chain_boots_and_the_guest_reads_through_it(guest_dir):
    sandbox = chained_sandbox(guest_dir, "81.0", declared=True)
    try:
        runner = start_runner(sandbox)
        _, errors = runner.communicate(timeout=180)
        assert runner.returncode == 4, errors
        assert "read through the chain" in (sandbox / jobcontract.CONSOLE_LOG_FILE).read_text()
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)

def test_an_undeclared_chain_is_refused_before_the_guest_starts(guest_dir):
    sandbox = chained_sandbox(guest_dir, "82.0", declared=False)
    try:
        runner = start_runner(sandbox)
        _, errors = runner.communicate(timeout=180)
        assert runner.returncode in (jobcontract.EXIT_MISMATCH, jobcontract.EXIT_REFUSED), errors
        assert "backing file" in errors and "base.img" in errors
        assert not (sandbox / jobcontract.CONSOLE_LOG_FILE).exists() or \
            "read through the chain" not in (sandbox / jobcontract.CONSOLE_LOG_FILE).read_text()
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
