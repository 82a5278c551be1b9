"""One job from start to end: check, start or restore, watch, and leave with the right exit code.

Exit codes (:mod:`condor_vmsubmit.jobcontract`): the guest's own status
(``condor-vm-exit-status=N`` on its console, 0 when it powers off without one) up to
``GUEST_STATUS_MAX``; ``EXIT_CHECKPOINTED`` once the guest is saved into the sandbox (on
SIGTERM, or every ``Options.checkpoint_interval`` seconds); ``EXIT_REFUSED``, ``EXIT_MISMATCH``,
``EXIT_START_FAILED``, ``EXIT_GUEST_CRASHED`` and ``EXIT_CHECKPOINT_FAILED`` with a hold reason
(chirp ``VMHoldReason`` and stderr).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import libvirt
from lxml import etree

from .. import jobcontract
from ..attributes import VM_HYPERVISORS
from ..checks.policy import Policy
from ..checks.preflight import judge, safety_refusals
from ..checks.safety import SandboxFiles
from ..classads import hypervisor_names, script_managed
from ..errors import VMSubmitError
from ..staged import image_dir_from_config
from .chirp import Reporter
from .follow import Follower, size_of
from .guard import GuardianProcess, node_cache
from .job import Job
from .overlays import attach_backing, use_staged_images, without_overlays
from .render import job_domain, to_text
from .savable import ConversionError, adopt_converted, convert_unsavable
from .screen import Grab, ScreenWatcher, libvirt_grab
from .session import Session
from .shares import Share, add_filesystems, plan_shares, virtiofs_daemons, virtiofsd
from .usage import UsageReporter, sample
from .verify import verify_match

USAGE_POLL_SECONDS = 0.2  # how often the watch loop looks whether a usage report is due
SAVE_POLL_SECONDS = 0.005  # how often a checkpoint looks whether the save image is complete
SAVE_IMAGE_COMPLETE = b"LibvirtQemudSave"  # libvirt's QEMU_SAVE_MAGIC (QEMU_SAVE_PARTIAL until then)
_EXIT_STATUS = re.compile(re.escape(jobcontract.GUEST_EXIT_MARKER) + r"(\d+)")
# What the firmware prints on the serial console when it finds nothing to boot (SeaBIOS with
# <bios useserial='yes'/>; OVMF's boot manager, and the UEFI shell it falls back to).
NOTHING_TO_BOOT = (("No bootable device.", "SeaBIOS"),
                   ("No bootable option or device was found", "UEFI firmware"),
                   ("Shell> ", "UEFI firmware, at the UEFI shell"))
BOOT_WATCH_BYTES = 1 << 20  # the firmware speaks first: later console output is the guest's


@dataclass(frozen=True)
class Outcome:
    """How the job ends: the exit code, and for the runner's own codes why."""

    code: int
    reason: str | None = None


@dataclass(frozen=True)
class Options:
    uri: str | None = None                 # None: a private qemu:///session in the sandbox
    usage_interval: float = jobcontract.USAGE_INTERVAL_SECONDS
    policy: Policy | None = None           # None: read the HTCondor configuration
    script_dir: Path | None = None         # admin scripts for script-managed hypervisors (None: the knob)
    checkpoint_interval: float | None = None  # seconds between periodic checkpoints (None: none)
    console_sink: Callable[[bytes], None] | None = None  # also gets the console as the guest writes it


class Stop(Exception):
    """The job ends before or while starting, with this outcome."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


def guest_exit_status(console: str) -> int | None:
    """The last status the guest reported on its console, capped at GUEST_STATUS_MAX.

    >>> guest_exit_status("boot\\ncondor-vm-exit-status=3\\r\\n")
    3
    >>> guest_exit_status("condor-vm-exit-status=255\\n"), guest_exit_status("no marker")
    (84, None)
    """
    found = _EXIT_STATUS.findall(console)
    return min(int(found[-1]), jobcontract.GUEST_STATUS_MAX) if found else None


def nothing_to_boot(console: str) -> str | None:
    """Why the guest cannot run, when the firmware said on the console it found nothing to boot.

    >>> nothing_to_boot("Booting from Hard Disk...\\r\\nBoot failed: not a bootable disk\\r\\nNo bootable device.")
    "the guest found nothing to boot (SeaBIOS: 'No bootable device.')"
    >>> nothing_to_boot("\\x1b[1m\\x1b[33mShell> \\x1b[0m"), nothing_to_boot("Linux version 6.1")
    ("the guest found nothing to boot (UEFI firmware, at the UEFI shell: 'Shell> ')", None)
    """
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console)
    for marker, who in NOTHING_TO_BOOT:
        if marker in plain:
            refused = "; Secure Boot refused to start an unsigned boot loader" if "Security Violation" in plain else ""
            return f"the guest found nothing to boot ({who}: '{marker}'{refused})"
    return None


class BootWatch:
    """Reads the console's first bytes as they come, for the firmware's word that nothing boots."""

    def __init__(self, console_log: Path):
        self.path = console_log
        self.seen = ""

    def reason(self) -> str | None:
        if len(self.seen) >= BOOT_WATCH_BYTES:
            return None
        try:
            with self.path.open("rb") as log:
                log.seek(len(self.seen))
                self.seen += log.read(BOOT_WATCH_BYTES - len(self.seen)).decode("latin-1")
        except OSError:
            return None
        return nothing_to_boot(self.seen[-4096:])


# --- before anything starts


def kvm_usable(machine_ad_hypervisors: list[str] | None) -> bool:
    """Whether KVM really runs guests here: discovery's word in the machine ad, else a boot probe
    (cached for this boot of the host)."""
    if machine_ad_hypervisors is not None:
        return "kvm" in machine_ad_hypervisors
    if not os.path.exists("/dev/kvm"):
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    folder = node_cache()
    cache = folder / "kvm" if folder is not None else None
    if cache is not None and cache.is_file() and cache.read_text().split()[:1] == [boot_id]:
        return cache.read_text().split()[1:] == ["yes"]
    from ..kvmprobe import boot_probe, probe_rom

    with tempfile.TemporaryDirectory() as tmp:
        rom = Path(tmp, "probe.rom")
        rom.write_bytes(probe_rom())
        ok = boot_probe("/usr/bin/qemu-system-x86_64", "kvm", rom).ok
    if cache is not None:
        cache.write_text(f"{boot_id} {'yes' if ok else 'no'}\n")
    return ok


def _hypervisors_in_ad(job: Job) -> list[str] | None:
    value = job.machine_ad.get(VM_HYPERVISORS.name)
    return [str(v) for v in value] if isinstance(value, list) else None


def choose_hypervisor(job: Job) -> Job:
    """The job with the hypervisor this node runs it with: of a list (``--hypervisor kvm,qemu``), the
    first that works here (kvm when it really does, qemu, a script discovery found), else the first
    (which verification then refuses); a single name or any is kept."""
    names = hypervisor_names(job.spec.hypervisor)
    if len(names) == 1:
        return job
    advertised = _hypervisors_in_ad(job) or []
    usable = {"qemu"} | ({"kvm"} if "kvm" in names and kvm_usable(_hypervisors_in_ad(job)) else set())
    chosen = next((name for name in names if name in usable or (script_managed(name) and name in advertised)),
                  names[0])
    return replace(job, spec=replace(job.spec, hypervisor=chosen))


def prepare(job: Job, options: Options, reporter: Reporter) -> etree._Element:
    """The domain to start: verified against the slot, through the admin policy, checked for safety."""
    image_dir = image_dir_from_config()
    try:  # staged images: an overlay in the sandbox replaces each (docs/staged-images.md)
        spec, chains = use_staged_images(job.spec, job.sandbox, image_dir)
    except VMSubmitError as error:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH, error.message)) from None
    job = replace(job, spec=spec)
    usable = {"qemu"} | ({"kvm"} if kvm_usable(_hypervisors_in_ad(job)) else set())
    problems = verify_match(without_overlays(job.spec, chains), job.machine_ad, job.sandbox.root, usable)
    if problems:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH, "; ".join(problems)))
    domain_type = "kvm" if "kvm" in usable and job.spec.hypervisor in (None, "any", "kvm") else "qemu"
    root, notes = job_domain(job.spec, job.sandbox, job.user_domain, domain_type=domain_type, job_id=job.job_id)
    for note in notes:
        reporter.say(note)
    attach_backing(root, chains, job.sandbox)
    add_filesystems(root, _shares(job))
    policy = options.policy if options.policy is not None else Policy.from_config()
    adopt_converted(root, job.sandbox)  # a disk converted in an earlier run is qcow2 now (runner/savable.py)
    files = SandboxFiles(job.sandbox.root)
    verdict = judge(root, job.spec, policy, files, path=job.sandbox.domain_xml_file, image_dir=image_dir)
    result = verdict.policy
    if result.verdict == "rejected" or result.root is None:
        raise Stop(Outcome(jobcontract.EXIT_REFUSED, f"admin policy: {result.reason}"))
    if result.verdict == "modified":
        reporter.set_attrs({jobcontract.POLICY_CHANGES_ATTR: result.summary()})
        reporter.log(f"admin policy changed the VM: {result.summary()}")
    if verdict.refusals:
        raise Stop(Outcome(jobcontract.EXIT_REFUSED, "refused: " + "; ".join(str(r) for r in verdict.refusals)))
    try:  # a disk QEMU could not save becomes qcow2 (runner/savable.py), checked again as such
        converted = convert_unsavable(result.root, job.sandbox)
    except ConversionError as error:
        raise Stop(Outcome(jobcontract.EXIT_START_FAILED, str(error))) from None
    if converted:
        reporter.log(f"converted to {jobcontract.SAVABLE_FORMAT} so that the guest can be checkpointed: "
                     f"{', '.join(converted)}")
        refusals = safety_refusals(result.root, job.spec, policy, files, image_dir=image_dir)
        if refusals:
            raise Stop(Outcome(jobcontract.EXIT_REFUSED, "refused: " + "; ".join(str(r) for r in refusals)))
    return result.root


def _shares(job: Job) -> tuple[Share, ...]:
    """The job's shared folders (docs/shared-folders.md)."""
    return plan_shares(job.spec, job.sandbox, virtiofs_available=virtiofsd() is not None)


# --- while it runs


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


def start(session: Session, root: etree._Element, job: Job, reporter: Reporter) -> libvirt.virDomain:
    """Restore the saved guest when the sandbox holds one, else boot it (AUTODESTROY)."""
    xml = to_text(root)
    save = job.sandbox.save_file
    try:
        if save.exists():
            session.connection.restoreFlags(str(save), xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
            save.unlink()
            reporter.log("guest restored from its checkpoint")
            return session.connection.lookupByName(root.findtext("name"))
        job.sandbox.console_log.write_bytes(b"")
        return session.connection.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError as exc:
        reason = f"the guest did not start: {exc.get_error_message()}"
        raise Stop(Outcome(jobcontract.EXIT_START_FAILED, reason)) from None


def following_console(job: Job, options: Options, offset: int) -> AbstractContextManager:
    """While in it, what the guest writes on its console after ``offset`` also goes to the
    options' console sink (the job's stdout), when there is one."""
    if options.console_sink is None:
        return nullcontext()
    return Follower(job.sandbox.console_log, options.console_sink, offset=offset)


def _stopped_outcome(detail: int, console_log: Path) -> Outcome:
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
        status = guest_exit_status(console_log.read_text(errors="replace")) if console_log.exists() else None
        return Outcome(status or 0)
    why = {libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "the guest crashed",
           libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "the emulator failed (QEMU ended unexpectedly)",
           libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "the guest was destroyed from outside the job"}
    return Outcome(jobcontract.EXIT_GUEST_CRASHED, why.get(detail, f"the guest stopped (libvirt detail {detail})"))


def watch(session: Session, domain: libvirt.virDomain, signals: Signals, job: Job,
          usage: UsageReporter, every: float | None = None) -> Outcome:
    """Wait for the guest to end, a signal, the next usage report or, ``every`` seconds, the next
    periodic checkpoint.  A periodic save that fails leaves the guest running (libvirt resumes it),
    with no more periodic checkpoints in this run."""
    uuid = domain.UUIDString()
    boot = BootWatch(job.sandbox.console_log)
    next_save = time.monotonic() + every if every else None
    while True:
        if (why := boot.reason()) is not None:
            try:
                domain.destroy()
            except libvirt.libvirtError:
                pass  # it ended by itself meanwhile
            return Outcome(jobcontract.EXIT_NOTHING_TO_BOOT, why)
        if signals.checkpoint:
            return checkpoint(domain, job)
        if next_save is not None and time.monotonic() >= next_save:
            saved = checkpoint(domain, job)
            if saved.code == jobcontract.EXIT_CHECKPOINTED:
                return replace(saved, reason="periodic checkpoint")
            usage.reporter.say(f"warning: periodic checkpoint failed, none more in this run: {saved.reason}")
            next_save = None
        if signals.interrupt:
            try:
                domain.destroy()
            except libvirt.libvirtError:
                pass  # it ended by itself meanwhile
            return Outcome(jobcontract.EXIT_INTERRUPTED, "interrupted")
        if usage.due():
            usage.report(sample(session.connection, domain))
        match signals.wait(timeout=USAGE_POLL_SECONDS):
            case (event_uuid, libvirt.VIR_DOMAIN_EVENT_STOPPED, detail) if event_uuid == uuid:
                return _stopped_outcome(detail, job.sandbox.console_log)


def checkpoint(domain: libvirt.virDomain, job: Job) -> Outcome:
    """Save the guest's state into the sandbox's checkpoint folder (the domain ends with it)."""
    job.sandbox.checkpoint_dir.mkdir(exist_ok=True)
    partial = job.sandbox.save_file.with_suffix(".partial")
    partial.unlink(missing_ok=True)  # an earlier attempt's, whose header may say complete
    error = save_guest(domain, partial)
    if error is not None:
        partial.unlink(missing_ok=True)
        return Outcome(jobcontract.EXIT_CHECKPOINT_FAILED, f"could not save the guest: {error}")
    partial.rename(job.sandbox.save_file)
    return Outcome(jobcontract.EXIT_CHECKPOINTED)


def save_guest(domain: libvirt.virDomain, path: Path) -> str | None:
    """Save the guest into ``path``: None once the image is complete, else libvirt's reason.

    libvirt writes the image, marks it complete in its header and then stops QEMU, and its
    call returns only about 0.2 s later (it looks for QEMU's end at that pace).  So the call
    runs in a thread and this returns as soon as the header says complete (an eviction
    waits that much less); libvirt ends the domain after that, and the job's own libvirtd
    goes with the guardian anyway.
    """
    errors: list[str] = []

    def save() -> None:
        try:
            domain.save(str(path))
        except libvirt.libvirtError as exc:
            errors.append(exc.get_error_message())

    saving = threading.Thread(target=save, name="save", daemon=True)
    saving.start()
    while saving.is_alive() and not save_image_complete(path):
        saving.join(SAVE_POLL_SECONDS)
    return errors[0] if errors else None


def save_image_complete(path: Path) -> bool:
    """Whether libvirt has finished the save image at ``path`` (the magic its header starts
    with is libvirt's partial one until the last byte of the guest's state is written)."""
    try:
        with path.open("rb") as image:
            return image.read(len(SAVE_IMAGE_COMPLETE)) == SAVE_IMAGE_COMPLETE
    except OSError:
        return False  # not made yet (or unreadable: then the save call's own end decides)


def run(job: Job, options: Options, reporter: Reporter, guardian: GuardianProcess | None = None) -> int:
    """Run the job's guest to its end; the runner's exit code.

    ``guardian``: the job's libvirtd, already started by the caller (who stops it); without
    one (and without ``options.uri``) the session starts its own.
    """
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    signals = Signals()
    try:
        outcome = _run(job, options, reporter, signals, guardian)
    except Stop as stop:
        outcome = stop.outcome
    finally:
        signals.restore()
    if outcome.code in jobcontract.HOLD_EXIT_CODES and outcome.reason:
        reporter.set_attrs({jobcontract.HOLD_REASON_ATTR: outcome.reason})
        reporter.say(f"error: {outcome.reason}")
    elif outcome.code == jobcontract.EXIT_CHECKPOINTED:
        why = f"{outcome.reason}, " if outcome.reason else ""
        reporter.log(f"guest state saved into {jobcontract.CHECKPOINT_DIR}/ ({why}exit {outcome.code})")
    return outcome.code


def _run(job: Job, options: Options, reporter: Reporter, signals: Signals,
         guardian: GuardianProcess | None) -> Outcome:
    # Output files (transfer_output_files): a job that ends early must not be held for their absence.
    job.sandbox.checkpoint_dir.mkdir(exist_ok=True)
    job.sandbox.console_log.touch()
    (job.sandbox.root / jobcontract.SCREEN_DIR).mkdir(exist_ok=True)
    job = choose_hypervisor(job)
    if script_managed(job.spec.hypervisor):
        if guardian is not None:  # started for a list's libvirt hypervisors, which this node does not run
            guardian.stop()
        from .script_backend import configured_script_dir, run_script_job

        return run_script_job(job, options.script_dir or configured_script_dir(), reporter, signals,
                              lambda offset: following_console(job, options, offset))
    root = prepare(job, options, reporter)
    usage = UsageReporter(reporter, options.usage_interval)
    with Session(job.sandbox.state_dir, options.uri, guardian) as session, virtiofs_daemons(_shares(job)):
        session.connection.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            lambda _c, dom, event, detail, q: q.put((dom.UUIDString(), event, detail)), signals.wakeups)
        if signals.checkpoint and job.sandbox.save_file.exists():
            return Outcome(jobcontract.EXIT_CHECKPOINTED)  # the saved state is still the guest's state
        if signals.checkpoint or signals.interrupt:
            return Outcome(jobcontract.EXIT_INTERRUPTED, "stopped before the guest started")
        # restored: the console log goes on from where it is; booted: start() empties it
        offset = size_of(job.sandbox.console_log) if job.sandbox.save_file.exists() else 0
        domain = start(session, root, job, reporter)
        with following_console(job, options, offset), \
                screen_watcher(libvirt_grab(session.connection, domain), job, signals) as screen:
            return with_last_screen(screen, watch(session, domain, signals, job, usage, options.checkpoint_interval),
                                    reporter)


# --- the guest's screen (runner/screen.py)


def screen_watcher(grab: Grab, job: Job, signals: Signals) -> ScreenWatcher:
    """The watcher of the guest's screen, capturing it when the job asks (``--capture-screen``);
    it leaves the guest alone once a checkpoint is asked for."""
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
