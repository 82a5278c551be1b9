"""Find the runner of the job whose sandbox we are in, and the per-job libvirt session it started.

``condor_ssh_to_job`` puts the user in the job's sandbox as the job's user, next to the
runner's processes.  The runner is the process running ``condor_vm_runner`` (or
``python -m condor_vmsubmit.runner``) in the sandbox; its guardian (the process named
``condor_vm_guard``, a child of the runner, see :mod:`condor_vmsubmit.runner.guard`) works in
the session's state folder, whose socket is the job's own ``qemu:///session``.  Reading
``/proc`` needs no cooperation from the runner and can never find another job's VM: a session
belongs to the runner its guardian is a child of.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..domain.sandbox import STATE_DIR
from ..runner import guard

RUNNER_MODULE = "condor_vmsubmit.runner"
RUNNER_PROGRAM = "condor_vm_runner"


@dataclass(frozen=True)
class Process:
    """A live process of ours: its pid, its arguments, its working directory, its name
    (``/proc/PID/comm``) and its parent's pid."""

    pid: int
    argv: tuple[str, ...]
    cwd: Path | None
    name: str = ""
    ppid: int = 0


@dataclass(frozen=True)
class Runner:
    """The job's runner, and the state folder of its private libvirt session (None when it
    uses a configured libvirt URI, or runs no libvirt at all)."""

    pid: int
    state_dir: Path | None

    @property
    def session_uri(self) -> str | None:
        return guard.uri(self.state_dir) if self.state_dir is not None else None


def processes(proc: Path = Path("/proc")) -> Iterator[Process]:
    """Every live process we may inspect (others' are skipped)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = tuple(a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")[:-1])
        except OSError:
            continue
        stat = guard.read_stat(entry)
        if not argv or stat is None or stat[1][0] == "Z":
            continue
        name, (_, ppid, *_) = stat
        try:
            cwd: Path | None = Path(os.readlink(entry / "cwd"))
        except OSError:
            cwd = None
        yield Process(int(entry.name), argv, cwd, name, int(ppid))


def is_runner(argv: Sequence[str]) -> bool:
    """Whether a command line runs the runner (its script, or the module).

    >>> is_runner(["/usr/bin/python3", "/usr/local/bin/condor_vm_runner"])
    True
    >>> is_runner(["python3", "-m", "condor_vmsubmit.runner", "--usage-interval", "1"])
    True
    >>> is_runner(["python3", "-m", "condor_vmsubmit.runner.guard", "/s/.vm", "12"])
    False
    """
    words = list(argv[:3])
    if any(Path(word).name == RUNNER_PROGRAM for word in words):
        return True
    return any(a == "-m" and b == RUNNER_MODULE for a, b in itertools.pairwise(words))


def guardian_of(process: Process, found: Mapping[int, Process]) -> tuple[Path, int] | None:
    """The state folder and runner pid of a guardian still with its runner, or None for any
    other process (``found``: the live processes by pid).

    A guardian works in the state folder and is its runner's child: a fork of it (the same
    command line) or started with the runner's pid as its last argument.  One whose runner is
    gone has been adopted by another process, which is no runner to signal.

    >>> runner = Process(11, ("python3", "-m", "condor_vmsubmit.runner"), Path("/s"), "python3", 1)
    >>> guardian = Process(12, runner.argv, Path("/s/.vm"), "condor_vm_guard", 11)
    >>> guardian_of(guardian, {11: runner})
    (PosixPath('/s/.vm'), 11)
    >>> guardian_of(guardian, {}) is None, guardian_of(runner, {11: runner}) is None
    (True, True)
    """
    if process.name != guard.PROCESS_NAME or process.cwd is None:
        return None
    parent = found.get(process.ppid)
    if process.argv[-1:] != (str(process.ppid),) and (parent is None or parent.argv != process.argv):
        return None
    return process.cwd, process.ppid


def find_runner(sandbox: Path, found: Sequence[Process] | None = None) -> Runner | None:
    """The runner of the job in ``sandbox``, or None when none runs there.

    A guardian whose state folder is the sandbox's ``.vm`` names its runner (this also finds a
    ``--local`` run, whose runner works elsewhere); otherwise the runner is the process running
    the runner's program in the sandbox, and its guardian, if any, gives its session.
    """
    found = list(processes()) if found is None else found
    by_pid = {process.pid: process for process in found}
    sandbox = sandbox.resolve()
    sessions: dict[int, Path] = {}
    for process in found:
        guardian = guardian_of(process, by_pid)
        if guardian is None:
            continue
        state_dir, runner_pid = guardian
        if state_dir == sandbox / STATE_DIR:
            return Runner(runner_pid, state_dir)
        sessions[runner_pid] = state_dir
    for process in found:
        if process.cwd == sandbox and is_runner(process.argv):
            return Runner(process.pid, sessions.get(process.pid))
    return None
