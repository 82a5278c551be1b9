#!/usr/bin/env python3
"""The runner against plain libvirt, same machine, same run, same rendered domain XML.

1. start: ``condor_vm_runner`` started -> the guest's first console line, against
   ``virsh create`` of the XML the runner renders (on an already running, warmed-up
   session libvirtd) -> the same first line.  The runner starts its own per-job
   libvirtd every time, and that is part of its time.
2. save + restore: SIGTERM -> runner exit 85 (state saved) plus runner start -> the
   next console line of the restored guest, against ``virsh save`` plus ``virsh
   restore`` -> the next console line.

A periodic checkpoint (docs/runner.md, "Checkpoints") is the same save and restore: the runner
saves the guest on its own instead of on SIGTERM, and HTCondor restarts it in place; so this is
also what one costs the guest (plus HTCondor's upload of the checkpoint files in between).

Prints medians and the ratios runner / virsh (target: at most 1.15), then the save and the
restore on their own, and the size of the save image (the bytes a checkpoint writes besides the
disks).  ``--fill-mib N`` has the guest first fill N MiB of its memory with data, so that its
saved state is as large as a working guest's (the target is measured without); ``--memory-mib``
sets the guest's memory (default: 128 MiB plus the fill).
The package's bytecode is compiled first, as ``pip install`` does on an execute node (with
``PYTHONDONTWRITEBYTECODE`` set, every runner would compile its sources anew).

    python3 bench/bench_runner.py [--rounds 3] [--fill-mib 0] [--memory-mib M]
"""

from __future__ import annotations

import argparse
import compileall
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from condor_vmsubmit import jobcontract  # noqa: E402
from condor_vmsubmit.domain.render import render_spec, to_text  # noqa: E402
from condor_vmsubmit.domain.sandbox import Sandbox  # noqa: E402
from condor_vmsubmit.runner import guard  # noqa: E402
from condor_vmsubmit.spec import VMSpec  # noqa: E402

from guest import configure_node, counts, guest_builder, guest_spec, make_sandbox, start_runner  # noqa: E402

COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.1; done"
BASE_MEMORY_MIB = 128
TIMEOUT = 600.0  # a 2 GiB guest filling its memory under TCG takes a while


def wait(condition, what: str, runner: subprocess.Popen | None = None) -> float:
    """Seconds until ``condition`` holds (polled every 10 ms); stops the bench if ``runner`` exits first."""
    start = time.monotonic()
    while not condition():
        if runner is not None and runner.poll() is not None:
            raise SystemExit(f"bench: the runner exited {runner.returncode} before {what}: {runner.stderr.read()}")
        if time.monotonic() - start > TIMEOUT:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def console_has_text(sandbox: Path):
    log = sandbox / jobcontract.CONSOLE_LOG_FILE
    return lambda: log.exists() and log.stat().st_size > 0


class ReferenceDaemon:
    """A session libvirtd started once, as an admin would keep one running for virsh.

    It is started by the same guardian the runner uses, so both daemons are set up alike
    (QEMU output to files, capabilities cache) and both have a parent that reaps QEMU
    promptly: libvirt waits for a killed QEMU to be reaped, and PID 1 may be slow at it.
    Unlike the runner's, it loads every libvirt driver, as an admin's daemon does.
    """

    def __init__(self) -> None:
        self.guardian = guard.GuardianProcess(Path(tempfile.mkdtemp(prefix="cvb", dir="/tmp")), all_drivers=True)
        self.guardian.wait_until_listening()
        time.sleep(0.5)  # listening, not just bound
        self.uri = self.guardian.uri

    def virsh(self, *args: str) -> None:
        subprocess.run(["virsh", "-q", "-c", self.uri, *args], check=True, capture_output=True)

    def close(self) -> None:
        self.guardian.stop()  # the guardian kills what is left and libvirtd, removes the folder


@dataclass(frozen=True)
class Workload:
    """The guest's job (count on the console, after filling ``fill_mib`` MiB of its memory) and spec."""

    fill_mib: int = 0
    memory_mib: int | None = None  # None: BASE_MEMORY_MIB plus the fill

    @property
    def script(self) -> str:
        fill = f"yes checkpoint | head -c {self.fill_mib << 20} > /fill; " if self.fill_mib else ""
        return fill + COUNTER

    @property
    def spec(self) -> VMSpec:
        return guest_spec(memory_mib=self.memory_mib or BASE_MEMORY_MIB + self.fill_mib)

    def sandbox(self, guest_dir: Path, job_id: str) -> Path:
        sandbox = make_sandbox(guest_dir, self.script, job_id=job_id, spec=self.spec)
        slot_mib = jobcontract.request_memory_mib(self.spec.memory_bytes)  # a slot the guest fits in
        (sandbox / "machine.ad").write_text(f'Memory = {max(slot_mib, 2048)}\nCpus = 2\n'
                                            'VM_HYPERVISORS = { "qemu" }\n')
        configure_node(sandbox)  # the runner holds a job whose machine ad names no node configuration
        return sandbox


@dataclass(frozen=True)
class Times:
    """One round, in seconds: boot to the first console line; save; restore to the next line; and
    the save image's size in bytes."""

    boot: float
    save: float
    restore: float
    image_bytes: int

    @property
    def save_restore(self) -> float:
        return self.save + self.restore


def runner_round(guest_dir: Path, workload: Workload, n: int) -> Times:
    sandbox = workload.sandbox(guest_dir, f"900.{n}")
    runner = start_runner(sandbox)
    boot = wait(console_has_text(sandbox), "the runner's guest", runner)
    wait(lambda: len(counts(sandbox)) >= 3, "counting", runner)
    start = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    runner.wait()
    saved = time.monotonic()
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, runner.stderr.read()
    image = (sandbox / jobcontract.CHECKPOINT_DIR / "guest.save").stat().st_size
    seen = len(counts(sandbox))
    runner = start_runner(sandbox)
    wait(lambda: len(counts(sandbox)) > seen, "the restored guest")
    restored = time.monotonic()
    os.killpg(runner.pid, signal.SIGINT)
    runner.wait()
    subprocess.run(["rm", "-rf", str(sandbox)], check=False)
    return Times(boot, saved - start, restored - saved, image)


def virsh_round(guest_dir: Path, workload: Workload, daemon: ReferenceDaemon, n: int) -> Times:
    sandbox = workload.sandbox(guest_dir, f"901.{n}")
    spec = VMSpec.from_json((sandbox / jobcontract.SPEC_FILE).read_text())
    xml = sandbox / "rendered.xml"
    xml.write_text(to_text(render_spec(spec, Sandbox(sandbox), domain_type="qemu", job_id=f"bench#{n}")))
    name = f"cvm-bench-{n}"
    xml.write_text(xml.read_text().replace(xml.read_text().split("<name>")[1].split("</name>")[0], name))
    start = time.monotonic()
    daemon.virsh("create", str(xml))
    wait(console_has_text(sandbox), "virsh's guest")
    boot = time.monotonic() - start
    wait(lambda: len(counts(sandbox)) >= 3, "counting")
    save = sandbox / "guest.save"
    start = time.monotonic()
    daemon.virsh("save", name, str(save))
    saved = time.monotonic()
    image = save.stat().st_size
    seen = len(counts(sandbox))
    daemon.virsh("restore", str(save), "--xml", str(xml))
    wait(lambda: len(counts(sandbox)) > seen, "the restored guest")
    restored = time.monotonic()
    daemon.virsh("destroy", name)
    subprocess.run(["rm", "-rf", str(sandbox)], check=False)
    return Times(boot, saved - start, restored - saved, image)


def report(what: str, ours: list[float], theirs: list[float]) -> None:
    """One line: medians and their ratio; then every round, for the spread."""
    mine, reference = statistics.median(ours), statistics.median(theirs)
    print(f"{what:38s} runner {mine:6.2f} s   virsh {reference:6.2f} s   ratio {mine / reference:.2f}")
    rounds = {name: " ".join(f"{t:.2f}" for t in times) for name, times in (("runner", ours), ("virsh", theirs))}
    print(f"{'':38s} rounds: runner {rounds['runner']}   virsh {rounds['virsh']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fill-mib", type=int, default=0, help="MiB of guest memory filled before counting")
    parser.add_argument("--memory-mib", type=int, help="guest memory (default: 128 MiB plus the fill)")
    args = parser.parse_args()
    workload = Workload(args.fill_mib, args.memory_mib)
    compileall.compile_dir(REPO / "condor_vmsubmit", quiet=1)
    guest_dir = Path(tempfile.mkdtemp(prefix="cvg", dir="/tmp"))
    guest_builder().build_guest(guest_dir)
    daemon = ReferenceDaemon()
    try:
        virsh_round(guest_dir, workload, daemon, 99)  # warm-up: the reference daemon probes QEMU once
        runner_times, virsh_times = [], []
        for n in range(args.rounds):  # interleaved, so both see the same machine load
            virsh_times.append(virsh_round(guest_dir, workload, daemon, n))
            runner_times.append(runner_round(guest_dir, workload, n))
    finally:
        daemon.close()
        subprocess.run(["rm", "-rf", str(guest_dir)], check=False)
    for what, field in (("start -> first console line", "boot"),
                        ("save + restore -> next console line", "save_restore"),
                        ("  of which save (SIGTERM -> exit 85)", "save"),
                        ("  of which restore -> next line", "restore")):
        report(what, [getattr(t, field) for t in runner_times], [getattr(t, field) for t in virsh_times])
    print(f"guest of {workload.spec.memory_bytes >> 20} MiB, {workload.fill_mib} MiB filled: save image "
          f"runner {statistics.median(t.image_bytes for t in runner_times) / 2**20:.0f} MiB, "
          f"virsh {statistics.median(t.image_bytes for t in virsh_times) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
