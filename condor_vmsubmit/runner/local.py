"""``--local``: run a VM on this machine through the same runner an execute node uses.

The job's input files are copied into a temporary sandbox next to a job ad and a
machine ad describing this machine; the runner runs in this process, the guest's
console streams to the terminal under a status line, and the sandbox is removed at
the end.  Ctrl-C destroys the guest and cleans up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath

from rich.console import Console

from .. import jobcontract
from ..domain.sandbox import Sandbox
from ..errors import InputError
from ..spec import VMSpec
from .backend import Options
from .chirp import Reporter
from .follow import Follower
from .hypervisor import kvm_usable
from .job import load_job
from .lifecycle import run
from .sandbox import ad_files

# No schedd to report usage to: a sample an hour is plenty.
LOCAL_OPTIONS = Options(usage_interval=3600.0)


def machine_ad_text(vcpus: int = 1) -> str:
    """A machine ad for this machine: all its memory and cpus make one slot, with as many cpus
    as the guest's ``vcpus`` (QEMU overcommits: a VM tried locally runs, only slower)."""
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    cpus = max(os.cpu_count() or 1, vcpus)
    return f"Memory = {memory_mib}\nCpus = {cpus}\nMachine = \"{os.uname().nodename}\"\n"


def overcommit_warning(spec: VMSpec, cores: int) -> str | None:
    """The warning for a guest with more (hot-pluggable) vCPUs than this host has cores.

    >>> overcommit_warning(VMSpec(source_format="libvirt", name="big", vcpus=16, vcpus_current=4, memory_bytes=1), 2)
    'warning: big may use up to 16 vCPUs (4 at start), more than the 2 cores of this host: QEMU overcommits
    them, the guest runs slower'
    >>> overcommit_warning(VMSpec(source_format="libvirt", name="small", vcpus=2, memory_bytes=1), 2) is None
    True
    """
    if spec.vcpus <= cores:
        return None
    start = f" ({spec.vcpus_current} at start)" if spec.vcpus_current else ""
    return (f"warning: {spec.name} may use up to {spec.vcpus} vCPUs{start}, more than the {cores} cores of this "
            "host: QEMU overcommits them, the guest runs slower")


def job_ad_text(job_id: str, capture_screen: float | None = None) -> str:
    """
    >>> job_ad_text("local#1", 2.0).splitlines()[-1]
    'VM_ATTR_CAPTURE_SCREEN = 2'
    """
    capture = f"{jobcontract.CAPTURE_SCREEN_ATTR} = {capture_screen:g}\n" if capture_screen else ""
    return f'ClusterId = 0\nProcId = 0\nGlobalJobId = "{job_id}"\nJobUniverse = 5\n{capture}'


def copy_inputs(input_files: list[str], folder: Path) -> None:
    """Copy the job's input files into the sandbox (copies: the guest may write its disks)."""
    for path in input_files:
        target = folder / PurePosixPath(path).name
        try:
            subprocess.run(["cp", "--reflink=auto", "--sparse=always", path, str(target)],
                           check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            raise InputError(f"cannot copy into the local sandbox: {exc.stderr.decode().strip()}",
                             path=path) from None


class ConsoleStream:
    """Follows the guest's console file and prints its lines above a status line."""

    def __init__(self, path: Path, terminal: Console, name: str):
        self.terminal = terminal
        self.name = name
        self.partial = ""
        self.started = time.monotonic()
        self.status = terminal.status(f"[bold]{name}[/]: starting")
        self.follower = Follower(path, self._lines, tick=self._tick)

    def __enter__(self) -> ConsoleStream:
        self.status.__enter__()
        self.follower.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.follower.__exit__(*exc)
        if self.partial:
            self.terminal.print(self.partial, markup=False, highlight=False)
        self.status.__exit__(*exc)

    def _lines(self, data: bytes) -> None:
        lines = (self.partial + data.decode(errors="replace")).split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.terminal.print(line.rstrip("\r"), markup=False, highlight=False)

    def _tick(self) -> None:
        elapsed = time.monotonic() - self.started
        self.status.update(f"[bold]{self.name}[/]: running {elapsed:.0f} s (Ctrl-C stops the guest)")


def run_local(spec: VMSpec, input_files: list[str], *, options: Options = LOCAL_OPTIONS,
              capture_screen: float | None = None, screen_to: Path | None = None) -> int:
    """Run ``spec`` here with ``input_files`` (the files the job would transfer); the exit code.

    ``capture_screen``: seconds between frames of the guest's screen; what the runner leaves in
    the sandbox's screen folder (frames, video, last screen) is copied into ``screen_to``."""
    terminal = Console(stderr=True)
    folder = Path(tempfile.mkdtemp(prefix="cvm-local-"))
    try:
        copy_inputs(input_files, folder)
        (folder / "job.ad").write_text(job_ad_text(f"local#{secrets.token_hex(4)}", capture_screen))
        (folder / "machine.ad").write_text(machine_ad_text(spec.vcpus))
        if (warning := overcommit_warning(spec, os.cpu_count() or 1)) is not None:
            terminal.print(warning, markup=False, highlight=False)
        spec_file = folder / jobcontract.SPEC_FILE
        spec = VMSpec.from_json(spec_file.read_text()) if spec_file.exists() else spec
        if spec.hypervisor == "kvm" and not kvm_usable(None):
            terminal.print(f"warning: {spec.name} asks for KVM, which does not work on this host: running it "
                           "under QEMU's emulation (TCG), much slower", markup=False, highlight=False)
            spec = replace(spec, hypervisor=None)
        spec_file.write_text(spec.to_json())
        environ = {"_CONDOR_JOB_AD": str(folder / "job.ad"), "_CONDOR_MACHINE_AD": str(folder / "machine.ad"),
                   "_CONDOR_SCRATCH_DIR": str(folder)}
        job = load_job(ad_files(environ), Sandbox(folder.resolve()))
        with ConsoleStream(Sandbox(folder).console_log, terminal, spec.name):
            code = run(job, options, Reporter(environ={}, stream=terminal.file))
        screen = folder / jobcontract.SCREEN_DIR
        if screen_to is not None and screen.is_dir() and any(screen.iterdir()):
            shutil.copytree(screen, screen_to / jobcontract.SCREEN_DIR, dirs_exist_ok=True)
            terminal.print(f"the guest's screen: {screen_to / jobcontract.SCREEN_DIR}/", highlight=False)
        terminal.print(_verdict(code), highlight=False)
        return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _verdict(code: int) -> str:
    """The last line a --local run prints.

    >>> _verdict(0)
    'guest exited with status 0'
    >>> _verdict(85)
    'guest saved (checkpoint exit code 85)'
    """
    if code <= jobcontract.GUEST_STATUS_MAX:
        return f"guest exited with status {code}"
    if code == jobcontract.EXIT_CHECKPOINTED:
        return f"guest saved (checkpoint exit code {code})"
    return f"condor_vm_runner exit code {code}"
