"""The libvirt backend: the job's guest as a domain in its own libvirt session.

prepare: verify the job against the slot, render the domain for this host (:mod:`condor_vmsubmit.domain`),
the admin policy and the safety rules over it, disks QEMU cannot save converted; run: the session
(:mod:`.session`, under the guardian of :mod:`.guard`) and the virtiofsd of the shared folders, then
the guest started (``VIR_DOMAIN_START_AUTODESTROY``) or restored from its checkpoint, and watched:
its lifecycle events, the firmware's word that nothing boots, usage reports, SIGTERM's checkpoint
and the periodic ones.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import libvirt
from lxml import etree

from .. import jobcontract
from ..checks.policy import Policy
from ..checks.preflight import judge, safety_refusals
from ..checks.safety import SandboxFiles
from ..domain.render import job_domain, to_text
from ..domain.shares import Share, add_filesystems, plan_shares
from ..errors import VMSubmitError
from ..staged import image_dir_from_config
from .backend import (
    Options,
    Outcome,
    Signals,
    Stop,
    guest_outcome,
    see_to_end,
    stopped_before_start,
)
from .chirp import Reporter
from .follow import size_of
from .guard import GuardianProcess
from .hypervisor import hypervisors_in_ad, kvm_usable
from .job import Job
from .overlays import attach_backing, use_staged_images, without_overlays
from .savable import ConversionError, adopt_converted, convert_unsavable
from .screen import libvirt_grab
from .session import Session
from .shares import virtiofs_daemons, virtiofsd
from .usage import UsageReporter, sample
from .verify import verify_match

USAGE_POLL_SECONDS = 0.2  # how often the watch loop looks whether a usage report is due
SAVE_POLL_SECONDS = 0.005  # how often a checkpoint looks whether the save image is complete
SAVE_IMAGE_COMPLETE = b"LibvirtQemudSave"  # libvirt's QEMU_SAVE_MAGIC (QEMU_SAVE_PARTIAL until then)
# What the firmware prints on the serial console when it finds nothing to boot (SeaBIOS with
# <bios useserial='yes'/>; OVMF's boot manager, and the UEFI shell it falls back to).
NOTHING_TO_BOOT = (("No bootable device.", "SeaBIOS"),
                   ("No bootable option or device was found", "UEFI firmware"),
                   ("Shell> ", "UEFI firmware, at the UEFI shell"))
BOOT_WATCH_BYTES = 1 << 20  # the firmware speaks first: later console output is the guest's


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


class LibvirtBackend:
    """The guest as a domain in the job's libvirt session: ``options.uri``, else a private
    ``qemu:///session`` in the sandbox under ``guardian`` (the job's libvirtd, already started by
    the caller, who stops it; without one the session starts its own)."""

    def __init__(self, options: Options, guardian: GuardianProcess | None):
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.options = options
        self.guardian = guardian
        self.root: etree._Element | None = None

    def prepare(self, job: Job, reporter: Reporter) -> None:
        self.root = prepare(job, self.options, reporter)

    def run(self, job: Job, reporter: Reporter, signals: Signals) -> Outcome:
        assert self.root is not None, "run before prepare"
        usage = UsageReporter(reporter, self.options.usage_interval)
        with Session(job.sandbox.state_dir, self.options.uri, self.guardian) as session, \
                virtiofs_daemons(_shares(job)):
            session.connection.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda _c, dom, event, detail, q: q.put((dom.UUIDString(), event, detail)), signals.wakeups)
            if signals.checkpoint and job.sandbox.save_file.exists():
                return Outcome(jobcontract.EXIT_CHECKPOINTED)  # the saved state is still the guest's state
            if (stopped := stopped_before_start(signals)) is not None:
                return stopped
            # restored: the console log goes on from where it is; booted: start() empties it
            offset = size_of(job.sandbox.console_log) if job.sandbox.save_file.exists() else 0
            domain = start(session, self.root, job, reporter)
            return see_to_end(job, self.options, reporter, signals, offset=offset,
                              grab=libvirt_grab(session.connection, domain),
                              watch=lambda: watch(session, domain, signals, job, usage,
                                                  self.options.checkpoint_interval))


# --- before anything starts


def prepare(job: Job, options: Options, reporter: Reporter) -> etree._Element:
    """The domain to start: verified against the slot, through the admin policy, checked for safety."""
    image_dir = image_dir_from_config()
    try:  # staged images: an overlay in the sandbox replaces each (docs/staged-images.md)
        spec, chains = use_staged_images(job.spec, job.sandbox, image_dir)
    except VMSubmitError as error:
        raise Stop(Outcome(jobcontract.EXIT_MISMATCH, error.message)) from None
    job = replace(job, spec=spec)
    usable = {"qemu"} | ({"kvm"} if kvm_usable(hypervisors_in_ad(job)) else set())
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


def _stopped_outcome(detail: int, console_log: Path) -> Outcome:
    if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
        return guest_outcome(console_log)
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
