"""The guest of a running job, whichever backend runs it: status, pause, resume, stop, checkpoint,
screenshot.

Two backends: the per-job libvirt session the runner started (:class:`LibvirtGuest`) and an
admin's script for script-managed jobs (:class:`ScriptGuest`, through
:mod:`condor_vmsubmit.runner.script_protocol`).  Ending the job goes through the runner, so the
job ends the way the runner's own paths end it:

* ``checkpoint`` sends the runner SIGTERM, its checkpoint path (the same signal a vacate sends):
  it saves the guest into ``vm-checkpoint/`` and exits with the checkpoint exit code; HTCondor
  transfers the folder to the submit side and at once restarts the runner in the same sandbox,
  which restores the guest where it was.  The job goes on; the guest stands still meanwhile.
* ``stop --force`` sends the runner SIGINT: it destroys the guest and exits with 130.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import classad2
from lxml import etree

from .. import jobcontract
from ..classads import hypervisor_names, script_managed
from ..domain.render import domain_name
from ..domain.sandbox import Sandbox
from ..errors import ControlError, InputError, NoGuestError
from ..runner.job import Job, read_ad
from ..runner.sandbox import read_spec
from ..runner.screen import ScreenError, libvirt_grab, script_grab
from ..runner.script_protocol import ActionResult, ScriptOutcome, find_script, run_action
from .locate import Runner, find_runner

POLL_SECONDS = 0.2
# libvirt's virDomainState, as one word (the words a script's ``status`` prints).
_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
           6: "crashed", 7: "pmsuspended"}


@dataclass(frozen=True)
class ConsoleTarget:
    """Where the guest's first serial console is: a pty we can attach to, or a file only."""

    interactive: bool
    log: Path | None


class Guest(Protocol):
    runner: Runner | None
    description: str

    def status(self) -> str: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def checkpoint(self, timeout: float) -> str: ...
    def console_target(self) -> ConsoleTarget: ...
    def running(self) -> bool: ...
    def screenshot(self) -> bytes: ...


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def signal_runner(runner: Runner, sig: signal.Signals, timeout: float, what: str) -> None:
    """Send the runner ``sig`` and wait for it to exit."""
    try:
        os.kill(runner.pid, sig)
    except ProcessLookupError:
        raise NoGuestError("the job's runner is gone") from None
    except PermissionError:
        raise ControlError(f"not allowed to signal the runner (pid {runner.pid})") from None
    if not wait_until(lambda: not pid_alive(runner.pid), timeout):
        raise ControlError(f"the runner (pid {runner.pid}) did not finish {what} within {timeout:.0f} s")


def checkpoint_through_runner(runner: Runner, sandbox: Path, timeout: float) -> str:
    """The runner's checkpoint path: SIGTERM, then wait for it to save the guest and exit."""
    signal_runner(runner, signal.SIGTERM, timeout, "saving the guest")
    return (f"the runner saved the guest into {sandbox / jobcontract.CHECKPOINT_DIR}/ and exited with the "
            f"checkpoint exit code {jobcontract.EXIT_CHECKPOINTED}; HTCondor transfers it and restarts the "
            "runner, which restores the guest")


class LibvirtGuest:
    """The domain in the job's libvirt session (the runner's private one, or a configured URI)."""

    def __init__(self, uri: str, name: str | None, runner: Runner, sandbox: Path):
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.libvirt = libvirt
        self.runner = runner
        self.sandbox = sandbox
        try:
            self.connection = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise NoGuestError(f"cannot reach the job's libvirt session: {exc.get_error_message()}") from None
        self.domain = self._find(name)
        self.description = f"libvirt domain {self.domain.name()}, runner pid {runner.pid}"

    def _find(self, name: str | None):
        try:
            if name is not None:
                return self.connection.lookupByName(name)
            domains = self.connection.listAllDomains(self.libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except self.libvirt.libvirtError as exc:
            raise NoGuestError(f"no VM runs in the job's libvirt session: {exc.get_error_message()}") from None
        if len(domains) != 1:
            raise NoGuestError(f"the job's libvirt session runs {len(domains)} VMs, not one")
        return domains[0]

    def _call(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except self.libvirt.libvirtError as exc:
            raise ControlError(f"{what}: {exc.get_error_message()}") from None

    def status(self) -> str:
        try:
            state, _reason = self.domain.state()
        except self.libvirt.libvirtError:
            return "shutoff"
        return _STATES.get(state, "nostate")

    def running(self) -> bool:
        return pid_alive(self.runner.pid) and self.status() in ("running", "paused", "blocked")

    def pause(self) -> None:
        self._call("pause", self.domain.suspend)

    def resume(self) -> None:
        self._call("resume", self.domain.resume)

    def stop(self, timeout: float) -> None:
        """Press the guest's ACPI power button and wait for it to power off."""
        self._call("stop", self.domain.shutdown)
        if not wait_until(lambda: not self.running(), timeout):
            raise ControlError(f"the guest did not power off within {timeout:.0f} s (does it handle the ACPI "
                               "power button?); 'stop --force' ends it")

    def checkpoint(self, timeout: float) -> str:
        return checkpoint_through_runner(self.runner, self.sandbox, timeout)

    def screenshot(self) -> bytes:
        """The guest's display now (libvirt's screenshot API), as a PPM."""
        try:
            return libvirt_grab(self.connection, self.domain)()
        except ScreenError as exc:
            raise ControlError(f"screenshot: {exc}") from None

    def console_target(self) -> ConsoleTarget:
        """The first serial port of the live domain: a pty (with its log file) or a file."""
        root = etree.fromstring(self.domain.XMLDesc().encode())
        serial = root.find("devices/serial")
        if serial is None:
            raise ControlError("the VM has no serial console")
        log = serial.find("log")
        source = serial.find("source")
        if serial.get("type") == "pty":
            return ConsoleTarget(True, Path(log.get("file")) if log is not None else None)
        path = source.get("path") if source is not None else None
        return ConsoleTarget(False, Path(path) if serial.get("type") == "file" and path else None)


class ScriptGuest:
    """A script-managed job's guest, driven through the admin's script."""

    def __init__(self, script: Path, sandbox: Path, job_ad: Path, runner: Runner | None):
        self.script = script
        self.sandbox = sandbox
        self.job_ad = job_ad
        self.runner = runner
        self.description = f"script {script}" + (f", runner pid {runner.pid}" if runner else "")

    def _action(self, action: str) -> ActionResult:
        result = run_action(self.script, action, self.job_ad, self.sandbox,
                            self.sandbox / jobcontract.SPEC_FILE)
        if result.outcome == ScriptOutcome.NOT_IMPLEMENTED:
            raise ControlError(f"{self.script.name} does not implement '{action}'")
        if result.outcome not in (ScriptOutcome.EXECUTED, ScriptOutcome.MODIFIED):
            raise ControlError(f"{action}: {result.reason}")
        return result

    def status(self) -> str:
        return (self._action("status").stdout.split() or ["nostate"])[0]

    def running(self) -> bool:
        return self.status() in ("running", "paused")

    def pause(self) -> None:
        self._action("pause")

    def resume(self) -> None:
        self._action("resume")

    def stop(self, timeout: float) -> None:
        self._action("stop")

    def checkpoint(self, timeout: float) -> str:
        if self.runner is None:
            raise NoGuestError(f"no condor_vm_runner works in {self.sandbox}: a checkpoint goes through it")
        return checkpoint_through_runner(self.runner, self.sandbox, timeout)

    def screenshot(self) -> bytes:
        """The guest's display now, through the script's ``screenshot`` action."""
        try:
            return script_grab(self.script, self.job_ad, self.sandbox, self.sandbox / jobcontract.SPEC_FILE)()
        except ScreenError as exc:
            raise ControlError(f"screenshot: {exc}") from None

    def console_target(self) -> ConsoleTarget:
        """A script writes the console to the file the runner names (``VMSUBMIT_CONSOLE``)."""
        return ConsoleTarget(False, self.sandbox / jobcontract.CONSOLE_LOG_FILE)


def installed_script(names: list[str], script_dir: Path) -> Path:
    """The script of the first of ``names`` installed in ``script_dir`` (else the last one's error)."""
    for name in names[:-1]:
        try:
            return find_script(name, script_dir)
        except InputError:
            continue
    return find_script(names[-1], script_dir)


def open_guest(sandbox: Path, *, libvirt_uri: str | None, script_dir: Path | None) -> Guest:
    """The guest of the job in ``sandbox``: through the admin's script for script-managed jobs,
    else in the runner's libvirt session.  A job that accepts several hypervisors
    (``--hypervisor kvm,qemu-direct``) runs under libvirt when the runner has a libvirt session,
    else under the first of its scripts installed here."""
    runner = find_runner(sandbox)
    spec_file = sandbox / jobcontract.SPEC_FILE
    spec = read_spec(Sandbox(sandbox)) if spec_file.is_file() else None
    job_ad = Path(os.environ.get("_CONDOR_JOB_AD") or sandbox / ".job.ad")
    names = hypervisor_names(spec.hypervisor) if spec is not None else ()
    scripts = [name for name in names if script_managed(name)]
    in_libvirt = libvirt_uri is not None or (runner is not None and runner.session_uri is not None)
    if scripts and (len(scripts) == len(names) or not in_libvirt):
        if script_dir is None:
            raise NoGuestError(f"the job's VM is script-managed ({', '.join(scripts)}) but no script directory "
                               "is configured (VMSUBMIT_SCRIPT_DIR, or --script-dir)")
        return ScriptGuest(installed_script(scripts, script_dir), sandbox, job_ad, runner)
    if runner is None:
        raise NoGuestError(f"no VM runs in {sandbox}: no condor_vm_runner works there "
                           "(run this in the job's sandbox after condor_ssh_to_job, or give --sandbox)")
    if runner.session_uri is not None:
        return LibvirtGuest(runner.session_uri, None, runner, sandbox)
    if libvirt_uri is None:
        raise NoGuestError(f"the runner (pid {runner.pid}) uses a libvirt URI of its own: give the same "
                           "--libvirt-uri (VMSUBMIT_LIBVIRT_URI)")
    if spec is None:
        raise NoGuestError(f"no VM spec in {sandbox}", path=spec_file)
    job = Job(Sandbox(sandbox), spec, read_ad(job_ad), classad2.ClassAd(), None)
    return LibvirtGuest(libvirt_uri, domain_name(job.job_id), runner, sandbox)
