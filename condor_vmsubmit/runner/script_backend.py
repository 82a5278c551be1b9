"""A script-managed job from start to end: the same lifecycle as the libvirt path, through the
admin's script (:mod:`condor_vmsubmit.runner.script_protocol`, docs/script-managed.md).

verify (ours, then the script's) -> start (restoring the checkpoint when the script finds one) ->
watch -> the guest's exit status; SIGTERM -> the script's checkpoint -> EXIT_CHECKPOINTED.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import jobcontract
from ..config import knob
from ..errors import InputError
from .chirp import Reporter
from .job import Job
from .lifecycle import (
    EXIT_INTERRUPTED,
    Outcome,
    Signals,
    Stop,
    guest_exit_status,
    screen_watcher,
    with_last_screen,
)
from .screen import script_grab
from .script_protocol import Outcome as ScriptOutcome
from .script_protocol import find_script, last_line, run_action, start_guest
from .verify import verify_match

SCRIPT_DIR_KNOB = "VMSUBMIT_SCRIPT_DIR"
JOB_AD_FILE = "job.ad"


def configured_script_dir() -> Path | None:
    """The admin's script folder from the HTCondor configuration, if set."""
    value = knob(SCRIPT_DIR_KNOB)
    return Path(value) if value else None


def run_script_job(job: Job, script_dir: Path | None, reporter: Reporter, signals: Signals) -> Outcome:
    """Run the job's guest through the script named by its hypervisor; the outcome."""
    hypervisor = job.spec.hypervisor or str(job.job_ad.get("VM_HYPERVISOR", ""))
    if script_dir is None:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH,
                           f"script-managed hypervisor '{hypervisor}' asked for, but {SCRIPT_DIR_KNOB} "
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
        return Outcome(EXIT_INTERRUPTED, "stopped before the guest started")

    guest = start_guest(script, ad_file, job.sandbox.root, job.sandbox.spec_file, job.sandbox.console_log)
    grab = script_grab(script, ad_file, job.sandbox.root, job.sandbox.spec_file)
    with screen_watcher(grab, job, signals) as screen:
        return with_last_screen(screen, _watch(guest, action, job, signals, hypervisor), reporter)


def _watch(guest: subprocess.Popen, action, job: Job, signals: Signals, hypervisor: str) -> Outcome:
    while guest.poll() is None:
        if signals.checkpoint:
            saved = action("checkpoint")
            if saved.outcome is ScriptOutcome.EXECUTED:
                guest.wait()
                return Outcome(jobcontract.EXIT_CHECKPOINTED)
            action("stop")
            guest.wait()
            return Outcome(EXIT_INTERRUPTED, f"{hypervisor} could not checkpoint: {saved.reason}")
        if signals.interrupt:
            action("stop")
            guest.kill()
            guest.wait()
            return Outcome(EXIT_INTERRUPTED, "interrupted")
        signals.wait(timeout=0.2)
    errors = guest.stderr.read() if guest.stderr else ""
    if guest.returncode != 0:
        return Outcome(jobcontract.EXIT_START_FAILED,
                       f"{hypervisor} failed to run the guest: {last_line(errors) or f'exit code {guest.returncode}'}")
    console = job.sandbox.console_log
    status = guest_exit_status(console.read_text(errors="replace")) if console.exists() else None
    return Outcome(status or 0)
