"""A script-managed job from start to end: the same lifecycle as the libvirt path, through the
admin's script (:mod:`condor_vmsubmit.runner.script_protocol`, docs/script-managed.md).

verify (ours, then the script's) -> start (restoring the checkpoint when the script finds one) ->
watch -> the guest's exit status; SIGTERM -> the script's checkpoint -> EXIT_CHECKPOINTED.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from .. import jobcontract
from ..attributes import JOB_HYPERVISOR
from ..checks import knobs
from ..errors import InputError
from .chirp import Reporter
from .follow import size_of
from .job import Job
from .lifecycle import Outcome, Signals, Stop, guest_exit_status, screen_watcher, with_last_screen
from .screen import script_grab
from .script_protocol import ScriptOutcome, find_script, last_line, read_tail, run_action, start_guest
from .verify import verify_match

JOB_AD_FILE = "job.ad"


def configured_script_dir() -> Path | None:
    """The admin's script folder from the HTCondor configuration, if set."""
    return knobs.configured(knobs.SCRIPT_DIR)


def run_script_job(job: Job, script_dir: Path | None, reporter: Reporter, signals: Signals,
                   following: Callable[[int], AbstractContextManager]) -> Outcome:
    """Run the job's guest through the script named by its hypervisor; the outcome.

    ``following(offset)``: the console is passed on from ``offset`` while the guest runs.
    """
    hypervisor = job.spec.hypervisor or str(job.job_ad.get(JOB_HYPERVISOR, ""))
    if script_dir is None:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH,
                           f"script-managed hypervisor '{hypervisor}' asked for, but {knobs.SCRIPT_DIR.name} "
                           "is not configured on this execute node"))
    try:
        script = find_script(hypervisor, script_dir)
    except InputError as exc:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH, exc.one_line())) from None
    problems = verify_match(job.spec, job.machine_ad, job.sandbox.root, {hypervisor})
    if problems:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH, "; ".join(problems)))

    job.sandbox.state_dir.mkdir(exist_ok=True)
    ad_file = job.sandbox.state_dir / JOB_AD_FILE
    ad_file.write_text(job.job_ad.printOld())

    def action(name: str):
        return run_action(script, name, ad_file, job.sandbox.root, job.sandbox.spec_file)

    verdict = action("verify")
    if verdict.outcome in (ScriptOutcome.REJECTED, ScriptOutcome.FAILED):
        raise Stop(Outcome(jobcontract.EXIT_REFUSED, f"{hypervisor} refused the VM: {verdict.reason}"))
    if verdict.outcome is ScriptOutcome.MODIFIED:
        reporter.set_attrs({jobcontract.POLICY_CHANGES_ATTR: f"{hypervisor} modified the job ad"})
        reporter.log(f"{hypervisor} modified the job ad:\n{verdict.stdout.strip()}")
    if signals.checkpoint or signals.interrupt:
        return Outcome(jobcontract.EXIT_INTERRUPTED, "stopped before the guest started")

    offset = size_of(job.sandbox.console_log)
    grab = script_grab(script, ad_file, job.sandbox.root, job.sandbox.spec_file)
    with tempfile.TemporaryFile(dir=job.sandbox.state_dir) as errors:
        guest = start_guest(script, ad_file, job.sandbox.root, job.sandbox.spec_file, job.sandbox.console_log,
                            errors)
        with following(offset), screen_watcher(grab, job, signals) as screen:
            return with_last_screen(screen, _watch(guest, errors, action, job, signals, hypervisor), reporter)


def _watch(guest: subprocess.Popen, errors: BinaryIO, action, job: Job, signals: Signals,
           hypervisor: str) -> Outcome:
    while guest.poll() is None:
        if signals.checkpoint:
            saved = action("checkpoint")
            if saved.outcome is ScriptOutcome.EXECUTED:
                guest.wait()
                return Outcome(jobcontract.EXIT_CHECKPOINTED)
            action("stop")
            guest.wait()
            return Outcome(jobcontract.EXIT_CHECKPOINT_FAILED, f"{hypervisor} could not checkpoint: {saved.reason}")
        if signals.interrupt:
            action("stop")
            guest.kill()
            guest.wait()
            return Outcome(jobcontract.EXIT_INTERRUPTED, "interrupted")
        signals.wait(timeout=0.2)
    if guest.returncode != 0:
        reason = last_line(read_tail(errors)) or f"exit code {guest.returncode}"
        return Outcome(jobcontract.EXIT_START_FAILED, f"{hypervisor} failed to run the guest: {reason}")
    console = job.sandbox.console_log
    status = guest_exit_status(console.read_text(errors="replace")) if console.exists() else None
    return Outcome(status or 0)
