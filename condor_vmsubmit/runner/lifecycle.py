"""One job from start to end, whatever runs its guest: choose the hypervisor and the backend,
prepare (check), run (start or restore, watch), and leave with the right exit code.

Exit codes (:mod:`condor_vmsubmit.jobcontract`): the guest's own status
(``condor-vm-exit-status=N`` on its console, 0 when it powers off without one) up to
``GUEST_STATUS_MAX``; ``EXIT_CHECKPOINTED`` once the guest is saved into the sandbox (on
SIGTERM, or every ``Options.checkpoint_interval`` seconds); ``EXIT_REFUSED``, ``EXIT_MISMATCH``,
``EXIT_START_FAILED``, ``EXIT_GUEST_CRASHED`` and ``EXIT_CHECKPOINT_FAILED`` with a hold reason
(chirp ``VMHoldReason`` and stderr).

The backend is chosen here and only here (:func:`backend_for`), and imported only once chosen:
a script-managed job never loads libvirt.
"""

from __future__ import annotations

from .. import jobcontract
from ..classads import script_managed
from .backend import Backend, Options, Outcome, Signals, Stop
from .chirp import Reporter
from .guard import GuardianProcess
from .hypervisor import choose_hypervisor
from .job import Job


def backend_for(job: Job, options: Options, guardian: GuardianProcess | None) -> Backend:
    """What runs the job's guest: the admin's script of a script-managed hypervisor, else libvirt."""
    if script_managed(job.spec.hypervisor):
        if guardian is not None:  # started for a list's libvirt hypervisors, which this node does not run
            guardian.stop()
        from .script_backend import ScriptBackend

        return ScriptBackend(options)
    from .libvirt_backend import LibvirtBackend

    return LibvirtBackend(options, guardian)


def run(job: Job, options: Options, reporter: Reporter, guardian: GuardianProcess | None = None) -> int:
    """Run the job's guest to its end; the runner's exit code.

    ``guardian``: the job's libvirtd, already started by the caller (who stops it); without
    one (and without ``options.uri``) the session starts its own.
    """
    signals = Signals()
    try:
        outcome = _run(job, options, reporter, signals, guardian)
    except Stop as stop:
        outcome = stop.outcome
    finally:
        signals.restore()
    return report(outcome, reporter)


def _run(job: Job, options: Options, reporter: Reporter, signals: Signals,
         guardian: GuardianProcess | None) -> Outcome:
    # Output files (transfer_output_files): a job that ends early must not be held for their absence.
    job.sandbox.checkpoint_dir.mkdir(exist_ok=True)
    job.sandbox.console_log.touch()
    (job.sandbox.root / jobcontract.SCREEN_DIR).mkdir(exist_ok=True)
    job = choose_hypervisor(job)
    backend = backend_for(job, options, guardian)
    backend.prepare(job, reporter)
    return backend.run(job, reporter, signals)


def report(outcome: Outcome, reporter: Reporter) -> int:
    """Tell how the job ended (a hold reason, or where the checkpoint went); its exit code."""
    if outcome.code in jobcontract.HOLD_EXIT_CODES and outcome.reason:
        reporter.set_attrs({jobcontract.HOLD_REASON_ATTR: outcome.reason})
        reporter.say(f"error: {outcome.reason}")
    elif outcome.code == jobcontract.EXIT_CHECKPOINTED:
        why = f"{outcome.reason}, " if outcome.reason else ""
        reporter.log(f"guest state saved into {jobcontract.CHECKPOINT_DIR}/ ({why}exit {outcome.code})")
    return outcome.code
