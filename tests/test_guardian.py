"""The guardian's libvirtd keeps the node's probe of QEMU from one job to the next.

libvirt probes QEMU again (a second or more under TCG) unless the probe it finds was made
with the CPUID it reads at start-up, and CPUID differs between a host's CPUs (the APIC ID).
The guardian copies the node's probe into the session with its file times, and libvirt
rewrites the file when it probes, so a file still bearing the node's time was reused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from condor_vmsubmit.runner import guard
from condor_vmsubmit.runner.session import Session
from condor_vmsubmit.session_daemon import LIBVIRTD

from guest import descendants, wait_for

pytestmark = pytest.mark.skipif(not (Path(LIBVIRTD).exists() and Path("/usr/bin/qemu-system-x86_64").exists()),
                                reason="libvirtd or QEMU is not installed (scripts/test installs them)")

# With the daemon on whichever CPU the scheduler picks, 5 reuses in a row happen 1 time in 32 on 2 CPUs.
ROUNDS = 6


def use_session(state: Path) -> dict[str, int]:
    """Start a job's session, have its libvirtd load the QEMU capabilities, stop it; the
    modification times of its capability files.  The daemon must get our CPUs back."""
    guardian = guard.GuardianProcess(state)
    with Session(state, guardian=guardian) as session:
        session.connection.getCapabilities()  # waits for a probe the guardian's own call started
        times = {f.name: f.stat().st_mtime_ns for f in (guardian.state_dir / guard.CAPABILITIES).glob("*.xml")}
        daemon, ours = guardian_daemon(guardian.pid), os.sched_getaffinity(0)
        wait_for(lambda: all(cpus == ours for cpus in thread_cpus(daemon)), 10, "the daemon to get its CPUs back")
    guardian.stop()
    return times


def guardian_daemon(guardian_pid: int) -> int:
    """The libvirtd the guardian started."""
    daemons = [pid for pid in descendants(guardian_pid) if os.path.realpath(f"/proc/{pid}/exe") == LIBVIRTD]
    assert len(daemons) == 1, daemons
    return daemons[0]


def thread_cpus(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(task.name)) for task in Path(f"/proc/{pid}/task").iterdir()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="CPUID differs between CPUs: needs at least 2")
def test_the_next_jobs_libvirtd_reuses_the_nodes_probe_of_qemu(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # a node cache of this test's own
    node = guard.capabilities_cache(tmp_path / f"condor_vm_runner-{os.geteuid()}", guard.probe_cpu())
    for n in range(ROUNDS):
        before = {f.name: f.stat().st_mtime_ns for f in node.glob("*.xml")}
        times = use_session(tmp_path / f"job{n}")
        assert times, "libvirt kept no probe of QEMU"
        if n == 0:
            assert {f.name: f.stat().st_mtime_ns for f in node.glob("*.xml")} == times, "the probe was not kept"
        else:
            assert times == before, f"job {n} probed QEMU again"
