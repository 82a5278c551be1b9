"""The script backend: a script-managed job's guest, run by the admin's script
(:mod:`condor_vmsubmit.runner.script_protocol`, docs/script-managed.md), behind the same
interface as the libvirt backend (:class:`condor_vmsubmit.runner.backend.Backend`).

prepare: verify (ours, then the script's); run: start (restoring the checkpoint when the script
finds one) -> watch -> the guest's exit status; SIGTERM -> the script's checkpoint -> EXIT_CHECKPOINTED.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import jobcontract
from ..attributes import JOB_HYPERVISOR
from ..checks import knobs
from ..domain.sandbox import Sandbox
from ..errors import InputError
from .backend import Options, Outcome, Signals, Stop, guest_outcome, see_to_end, stopped_before_start
from .chirp import Reporter
from .follow import size_of
from .job import Job
from .screen import script_grab
from .script_protocol import ActionResult, ScriptOutcome, find_script, last_line, read_tail, run_action, start_guest
from .verify import verify_match

JOB_AD_FILE = "job.ad"


def configured_script_dir() -> Path | None:
    """The admin's script folder from the HTCondor configuration, if set."""
    return knobs.configured(knobs.SCRIPT_DIR)


@dataclass(frozen=True)
class JobScript:
    """The admin's script that runs the job's guest, and the files it is called with."""

    path: Path
    hypervisor: str
    ad_file: Path      # the job ad, as the script reads it
    sandbox: Sandbox

    def action(self, name: str) -> ActionResult:
        """Run one of the script's short actions for the job."""
        return run_action(self.path, name, self.ad_file, self.sandbox.root, self.sandbox.spec_file)


class ScriptBackend:
    """The guest run by the admin's script named by the job's hypervisor, found in
    ``options.script_dir`` (else the knob's folder)."""

    def __init__(self, options: Options):
        self.options = options
        self.script_dir = options.script_dir or configured_script_dir()
        self.script: JobScript | None = None

    def prepare(self, job: Job, reporter: Reporter) -> None:
        """Our verification, then the script's ``verify``; a job ad the script modified is reported."""
        hypervisor = job.spec.hypervisor or str(job.job_ad.get(JOB_HYPERVISOR, ""))
        if self.script_dir is None:
            raise Stop(Outcome(jobcontract.EXIT_MISMATCH,
                               f"script-managed hypervisor '{hypervisor}' asked for, but {knobs.SCRIPT_DIR.name} "
                               "is not configured on this execute node"))
        try:
            path = find_script(hypervisor, self.script_dir)
        except InputError as exc:
            raise Stop(Outcome(jobcontract.EXIT_MISMATCH, exc.one_line())) from None
        problems = verify_match(job.spec, job.machine_ad, job.sandbox.root, {hypervisor})
        if problems:
            raise Stop(Outcome(jobcontract.EXIT_MISMATCH, "; ".join(problems)))

        job.sandbox.state_dir.mkdir(exist_ok=True)
        script = JobScript(path, hypervisor, job.sandbox.state_dir / JOB_AD_FILE, job.sandbox)
        script.ad_file.write_text(job.job_ad.printOld())
        verdict = script.action("verify")
        if verdict.outcome in (ScriptOutcome.REJECTED, ScriptOutcome.FAILED):
            raise Stop(Outcome(jobcontract.EXIT_REFUSED, f"{hypervisor} refused the VM: {verdict.reason}"))
        if verdict.outcome is ScriptOutcome.MODIFIED:
            reporter.set_attrs({jobcontract.POLICY_CHANGES_ATTR: f"{hypervisor} modified the job ad"})
            reporter.log(f"{hypervisor} modified the job ad:\n{verdict.stdout.strip()}")
        self.script = script

    def run(self, job: Job, reporter: Reporter, signals: Signals) -> Outcome:
        """``start`` (which restores the checkpoint when the script finds one), watched to its end."""
        script = self.script
        assert script is not None, "run before prepare"
        if (stopped := stopped_before_start(signals)) is not None:
            return stopped
        offset = size_of(job.sandbox.console_log)
        grab = script_grab(script.path, script.ad_file, job.sandbox.root, job.sandbox.spec_file)
        with tempfile.TemporaryFile(dir=job.sandbox.state_dir) as errors:
            guest = start_guest(script.path, script.ad_file, job.sandbox.root, job.sandbox.spec_file,
                                job.sandbox.console_log, errors)
            return see_to_end(job, self.options, reporter, signals, offset=offset, grab=grab,
                              watch=lambda: _watch(guest, errors, script, signals))


def _watch(guest: subprocess.Popen, errors: BinaryIO, script: JobScript, signals: Signals) -> Outcome:
    while guest.poll() is None:
        if signals.checkpoint:
            saved = script.action("checkpoint")
            if saved.outcome is ScriptOutcome.EXECUTED:
                guest.wait()
                return Outcome(jobcontract.EXIT_CHECKPOINTED)
            script.action("stop")
            guest.wait()
            return Outcome(jobcontract.EXIT_CHECKPOINT_FAILED,
                           f"{script.hypervisor} could not checkpoint: {saved.reason}")
        if signals.interrupt:
            script.action("stop")
            guest.kill()
            guest.wait()
            return Outcome(jobcontract.EXIT_INTERRUPTED, "interrupted")
        signals.wait(timeout=0.2)
    if guest.returncode != 0:
        reason = last_line(read_tail(errors)) or f"exit code {guest.returncode}"
        return Outcome(jobcontract.EXIT_START_FAILED, f"{script.hypervisor} failed to run the guest: {reason}")
    return guest_outcome(script.sandbox.console_log)
