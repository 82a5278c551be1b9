"""What runs a job's guest: the one interface every backend implements, and what they share.

A backend is :mod:`.libvirt_backend` (a domain in the job's libvirt session) or
:mod:`.script_backend` (an admin's script, docs/script-managed.md); :mod:`.lifecycle` chooses
one for each job.  Both end in an :class:`Outcome`, watch :class:`Signals`, pass the guest's
console on and watch its screen the same way (:func:`see_to_end`).  Nothing here imports
libvirt: a script-managed job never loads it.
"""

from __future__ import annotations

import queue
import re
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .. import jobcontract
from .chirp import Reporter
from .follow import Follower
from .job import Job
from .screen import Grab, ScreenWatcher

if TYPE_CHECKING:
    from ..checks.policy import Policy

_EXIT_STATUS = re.compile(re.escape(jobcontract.GUEST_EXIT_MARKER) + r"(\d+)")


@dataclass(frozen=True)
class Outcome:
    """How the job ends: the exit code, and for the runner's own codes why."""

    code: int
    reason: str | None = None


class Stop(Exception):
    """The job ends before or while starting, with this outcome."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass(frozen=True)
class Options:
    uri: str | None = None                 # None: a private qemu:///session in the sandbox
    usage_interval: float = jobcontract.USAGE_INTERVAL_SECONDS
    policy: Policy | None = None           # None: read the HTCondor configuration
    script_dir: Path | None = None         # admin scripts for script-managed hypervisors (None: the knob)
    checkpoint_interval: float | None = None  # seconds between periodic checkpoints (None: none)
    console_sink: Callable[[bytes], None] | None = None  # also gets the console as the guest writes it


class Signals:
    """SIGTERM (vacate, rm, hold) asks for a checkpoint; SIGINT (Ctrl-C of --local) for the end.

    Each signal also puts ``None`` into :attr:`wakeups`, the queue the runner waits on (the
    libvirt event thread puts the guest's lifecycle events there too), so a checkpoint starts
    the moment SIGTERM arrives.  A :class:`queue.SimpleQueue` may be fed from a signal handler.
    """

    def __init__(self) -> None:
        self.checkpoint = False
        self.interrupt = False
        self.wakeups: queue.SimpleQueue = queue.SimpleQueue()
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self._term)
        signal.signal(signal.SIGINT, self._int)

    def _term(self, *_: object) -> None:
        self.checkpoint = True
        self.wakeups.put(None)

    def _int(self, *_: object) -> None:
        self.interrupt = True
        self.wakeups.put(None)

    def wait(self, timeout: float) -> object | None:
        """The next wakeup (None for a signal), or None after ``timeout`` seconds without one."""
        try:
            return self.wakeups.get(timeout=timeout)
        except queue.Empty:
            return None

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Backend(Protocol):
    """One way of running a job's guest on this node."""

    def prepare(self, job: Job, reporter: Reporter) -> None:
        """Check the job against this node and its rules before anything starts; raise :class:`Stop`
        to end it there."""

    def run(self, job: Job, reporter: Reporter, signals: Signals) -> Outcome:
        """Start the prepared guest (or restore it from its checkpoint) and see it to its end."""


# --- the guest's end


def guest_exit_status(console: str) -> int | None:
    """The last status the guest reported on its console, capped at GUEST_STATUS_MAX.

    >>> guest_exit_status("boot\\ncondor-vm-exit-status=3\\r\\n")
    3
    >>> guest_exit_status("condor-vm-exit-status=255\\n"), guest_exit_status("no marker")
    (84, None)
    """
    found = _EXIT_STATUS.findall(console)
    return min(int(found[-1]), jobcontract.GUEST_STATUS_MAX) if found else None


def guest_outcome(console_log: Path) -> Outcome:
    """A guest that ended by itself: the status it reported on its console, else 0."""
    status = guest_exit_status(console_log.read_text(errors="replace")) if console_log.exists() else None
    return Outcome(status or 0)


def stopped_before_start(signals: Signals) -> Outcome | None:
    """The outcome of a job told to stop before its guest started, if it was."""
    if signals.checkpoint or signals.interrupt:
        return Outcome(jobcontract.EXIT_INTERRUPTED, "stopped before the guest started")
    return None


# --- while it runs: the console and the screen


def see_to_end(job: Job, options: Options, reporter: Reporter, signals: Signals, *, offset: int, grab: Grab,
               watch: Callable[[], Outcome]) -> Outcome:
    """The outcome of ``watch`` (which waits for the started guest's end), while the console is
    passed on from ``offset`` (:func:`following_console`) and the screen watched (``grab``)."""
    with following_console(job, options, offset), screen_watcher(grab, job, signals) as screen:
        return with_last_screen(screen, watch(), reporter)


def following_console(job: Job, options: Options, offset: int) -> AbstractContextManager:
    """While in it, what the guest writes on its console after ``offset`` also goes to the
    options' console sink (the job's stdout), when there is one."""
    if options.console_sink is None:
        return nullcontext()
    return Follower(job.sandbox.console_log, options.console_sink, offset=offset)


def screen_watcher(grab: Grab, job: Job, signals: Signals) -> ScreenWatcher:
    """The watcher of the guest's screen (runner/screen.py), capturing it when the job asks
    (``--capture-screen``); it leaves the guest alone once a checkpoint is asked for."""
    value = job.job_ad.get(jobcontract.CAPTURE_SCREEN_ATTR)
    capture = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None
    return ScreenWatcher(grab, job.sandbox.root / jobcontract.SCREEN_DIR, capture, lambda: signals.checkpoint)


def with_last_screen(screen: ScreenWatcher, outcome: Outcome, reporter: Reporter) -> Outcome:
    """The outcome, after saving the last screen of a guest that ended in a way the user did not
    ask for (a hold: crash, refusal, timeout...; a checkpoint: the pool stopped the runner), named in
    the hold reason or the job log; and after closing the capture (its video at the job's end)."""
    unasked = outcome.code in jobcontract.HOLD_EXIT_CODES or outcome.code == jobcontract.EXIT_CHECKPOINTED
    said = screen.last_screen() if unasked else None
    captured = screen.finish(final=outcome.code != jobcontract.EXIT_CHECKPOINTED)
    if captured:
        reporter.log(captured)
    if said and outcome.code in jobcontract.HOLD_EXIT_CODES:
        return replace(outcome, reason=f"{outcome.reason}; {said}")
    if said:
        reporter.log(said)
    return outcome
