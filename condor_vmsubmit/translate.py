"""VMSpec -> HTCondor submit description, for two targets.

* ``runner`` (default): a vanilla-universe job whose executable is the execute-side
  runner (``condor_vm_runner``); the spec file, the user's domain XML and the disks
  travel in ``transfer_input_files``; custom ``VM_*`` job attributes describe the VM
  and Requirements match what execute nodes advertise (``VM_TYPES``,
  ``VM_HYPERVISORS``, ``VM_<HV>_ATTR_*``; see docs/attributes.md).
* ``vm-universe``: a stock ``universe = vm`` job that today's condor_submit accepts.
  What that target cannot express becomes a warning note, or a
  :class:`~condor_vmsubmit.errors.TargetError` under ``strict``.

Everything here is pure: no file is read or written, nothing is contacted.  The
caller (``cli/submit_options.py``) writes the :attr:`SubmitDescription.job_files` and
submits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import PurePath, PurePosixPath
from typing import Literal

from . import jobcontract
from .classads import ANY_HYPERVISOR, classad_string, hypervisor_attr, hypervisor_names, submit_safe, vm_type_for
from .errors import InputError, TargetError
from .jobcontract import request_memory_mib
from .spec import Disk, VMSpec
from .staged import image_overlay_name, staged_name, staged_names

Target = Literal["runner", "vm-universe"]
TARGETS: tuple[Target, ...] = ("runner", "vm-universe")
Level = Literal["note", "warning"]

MIB = 1024 * 1024
# The stock VM universe knows these vm_type values (vmware was removed in HTCondor 10).
STOCK_VM_TYPES = ("kvm", "xen")


# spec.extras keys that say how the guest wants to be run, emitted as VM_<HV>_ATTR_<KEY>; the other
# extras are facts about the source (image CIDs, appliance product names) and stay in the spec file.
HYPERVISOR_WISHES = frozenset({"os_type", "cpu_mode", "cpu_model", "scsi_controller"})


@dataclass(frozen=True)
class Note:
    """Something the translation dropped, defaulted or changed, naming the source element."""

    source: str
    message: str
    level: Level = "note"

    def one_line(self) -> str:
        return f"{self.level}: {self.source}: {self.message}"


@dataclass(frozen=True)
class JobFile:
    """A file the submit side writes into the job's folder before submitting: ``text`` or a copy of
    ``copy_of`` (the spec file, the user's domain XML)."""

    path: str
    text: str | None = None
    copy_of: str | None = None


@dataclass(frozen=True)
class TranslateOptions:
    """How to translate; every field has the command-line default."""

    target: Target = "runner"
    hypervisor: str | None = None          # overrides the source's; "any" matches any hypervisor
    runner: str = jobcontract.DEFAULT_RUNNER
    output_dir: str = "."                  # where the spec file, logs and job output go
    transfer_disks: bool = True
    strict: bool = False
    batch_name: str | None = None
    append: tuple[tuple[str, str], ...] = ()
    extra_input_files: tuple[str, ...] = ()
    queue: int = 1
    checkpoint_interval: int = jobcontract.DEFAULT_CHECKPOINT_INTERVAL_SECONDS  # seconds; 0: none
    capture_screen: float | None = None    # seconds between two frames of the guest's screen (None: off)


@dataclass(frozen=True)
class SubmitDescription:
    """Ordered submit commands, the files the job needs, and notes for the user."""

    commands: tuple[tuple[str, str], ...]
    input_files: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    job_files: tuple[JobFile, ...] = ()
    queue: int = 1

    def text(self) -> str:
        """The description in condor_submit syntax, ending with its queue statement."""
        lines = [f"{key} = {value}" for key, value in self.commands]
        lines.append("queue" if self.queue == 1 else f"queue {self.queue}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """The JSON form printed by ``--dry-run --json``."""
        return {
            "commands": [[key, value] for key, value in self.commands],
            "queue": self.queue,
            "submit": self.text(),
            "input_files": list(self.input_files),
            "job_files": [job_file.path for job_file in self.job_files],
            "notes": [{"source": n.source, "level": n.level, "message": n.message} for n in self.notes],
        }


def translate(spec: VMSpec, options: TranslateOptions = TranslateOptions()) -> SubmitDescription:
    """Translate ``spec`` for ``options.target``; raises TargetError under ``strict``."""
    if options.target not in TARGETS:
        raise TargetError(f"unknown target '{options.target}' (choose {' or '.join(TARGETS)})")
    builder = _Builder(spec, options)
    if options.target == "runner":
        builder.runner_job()
    else:
        builder.vm_universe_job()
    builder.finish()
    return builder.result()


# --- ClassAd and submit-language quoting -------------------------------------------------------




def classad_bool(value: bool) -> str:
    return "true" if value else "false"


def safe_file_stem(name: str) -> str:
    """A file-name-safe version of the VM name.

    >>> safe_file_stem("web server/01")
    'web_server_01'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "vm"
    return stem[:64]


# --- the builder ------------------------------------------------------------------------------

_ELEMENTS = {
    "libvirt": {"disk": "<disk>", "nic": "<interface>", "share": "<filesystem>", "firmware": "<os>",
                "kernel": "<os><kernel>", "vcpu": "<vcpu>", "hypervisor": "<domain type>",
                "memory": "<memory>"},
    "ovf": {"disk": "disk Item", "nic": "ethernet Item", "share": "shared folder",
            "firmware": "firmware", "kernel": "kernel", "vcpu": "cpu Item",
            "hypervisor": "VirtualSystemType", "memory": "memory Item"},
}


class _Builder:
    """Accumulates commands, notes and files while one spec is translated."""

    def __init__(self, spec: VMSpec, options: TranslateOptions):
        self.spec = spec
        self.options = options
        self.commands: list[tuple[str, str]] = []
        self.notes: list[Note] = []
        self.input_files: list[str] = []
        self.job_files: list[JobFile] = []
        self.writable_shares: list[str] = []  # folder names in the sandbox

    # helpers

    def set(self, key: str, value: str | int) -> None:
        self.commands.append((key, str(value)))

    def attr(self, name: str, value: str | int | float | bool) -> None:
        """A custom job attribute (``MY.name``), quoted by type."""
        if isinstance(value, bool):
            text = classad_bool(value)
        elif isinstance(value, (int, float)):
            text = f"{value:g}"
        else:
            text = classad_string(value)
        self.set(f"MY.{name}", text)

    def note(self, source: str, message: str, level: Level = "note") -> None:
        self.notes.append(Note(source, message, level))

    def element(self, kind: str, index: int | None = None, detail: str | None = None) -> str:
        """How the user's file names the element: ``<disk> #2 (hdc)``."""
        names = _ELEMENTS.get(self.spec.source_format, {})
        text = names.get(kind, kind)
        if index is not None:
            text += f" #{index + 1}"
        if detail:
            text += f" ({detail})"
        return text

    def disk_element(self, index: int, disk: Disk) -> str:
        return self.element("disk", index, disk.target or disk.source)

    def resolve(self, path: str) -> str:
        """An input path made absolute against the source file's folder."""
        if PurePosixPath(path).is_absolute() or not self.spec.source_path:
            return path
        return str(PurePath(self.spec.source_path).parent / path)

    def transfer(self, path: str, what: str) -> None:
        if "," in path:
            raise InputError(f"{what}: cannot transfer a file whose name contains ',': {path}",
                             path=self.spec.source_path)
        if path not in self.input_files:
            self.input_files.append(path)

    @property
    def hypervisor(self) -> str:
        """The hypervisor the job asks for; several separated by commas mean any of them."""
        return ",".join(hypervisor_names(self.options.hypervisor or self.spec.hypervisor))

    @property
    def output_dir(self) -> str:
        return self.options.output_dir.rstrip("/") or "/"

    def out_path(self, name: str) -> str:
        return str(PurePosixPath(self.output_dir) / name)

    # the runner target

    def runner_job(self) -> None:
        spec, options = self.spec, self.options
        hypervisor = self.hypervisor
        if not options.hypervisor and not spec.hypervisor:
            self.note(self.element("hypervisor"), "no hypervisor named: the job matches any (--hypervisor)")
        elif hypervisor == "kvm":
            self.note(self.element("hypervisor"),
                      "kvm matches only nodes where KVM works; --hypervisor qemu or any widens the match")
        stem = safe_file_stem(spec.name)
        self.set("universe", "vanilla")
        self.set("executable", submit_safe(options.runner))
        self.set("transfer_executable", "false")
        self.set("initialdir", submit_safe(self.output_dir))
        self.set("log", submit_safe(f"{stem}.log"))
        self.set("output", f"{stem}.$(Cluster).$(Process).out")  # the stem is file-name safe
        self.set("error", f"{stem}.$(Cluster).$(Process).err")
        self.set("should_transfer_files", "YES")
        # ON_EXIT_OR_EVICT: a save made on SIGTERM (vacate, preemption, hold) reaches the next start
        self.set("when_to_transfer_output", "ON_EXIT_OR_EVICT")
        self.set("transfer_input_files", "")  # filled in finish()
        self.set("request_cpus", spec.vcpus)
        memory_mib = request_memory_mib(spec.memory_bytes)
        self.set("request_memory", memory_mib)
        self.note(self.element("memory"),
                  f"request_memory is {memory_mib} MiB: guest memory plus QEMU overhead "
                  f"({jobcontract.QEMU_OVERHEAD_BYTES // MIB} MiB + "
                  f"{jobcontract.QEMU_OVERHEAD_FRACTION:.0%})")
        state_kib = math.ceil(spec.memory_bytes / 1024)
        self.set("request_disk", f"MY.DiskUsage + {state_kib}")
        self.note("request_disk", "the input files (DiskUsage) plus guest memory for a saved state; a guest "
                                  "that grows its disks needs more (--append request_disk=SIZE)")
        self.add_spec_and_xml()
        self.shared_folders()
        self.runner_disks()
        self.vm_attributes(hypervisor)
        self.set("requirements", self.runner_requirements(hypervisor))
        self.checkpoints()
        codes = ", ".join(str(code) for code in jobcontract.HOLD_EXIT_CODES)
        self.set("on_exit_hold", f"MY.ExitBySignal =?= false && member(MY.ExitCode, {{{codes}}})")
        reason = jobcontract.HOLD_REASON_ATTR
        self.set("on_exit_hold_reason",
                 f'ifThenElse(isString(MY.{reason}), MY.{reason}, '
                 f'strcat("condor_vm_runner exited with code ", string(MY.ExitCode)))')
        self.set("on_exit_hold_subcode", "MY.ExitCode")
        self.set("want_io_proxy", "true")

    def add_spec_and_xml(self) -> None:
        """The spec file (with the hypervisor the job asks for; None for any) and the user's XML."""
        spec_path = self.out_path(jobcontract.SPEC_FILE)
        chosen = None if self.hypervisor == ANY_HYPERVISOR else self.hypervisor
        self.job_files.append(JobFile(spec_path, text=replace(self.spec, hypervisor=chosen).to_json()))
        self.transfer(spec_path, "spec file")
        if self.spec.source_format == "libvirt" and self.spec.source_path:
            xml_path = self.out_path(jobcontract.DOMAIN_XML_FILE)
            self.job_files.append(JobFile(xml_path, copy_of=self.spec.source_path))
            self.transfer(xml_path, "domain XML")

    def checkpoints(self) -> None:
        """The saved state travels with the files it belongs to, both when the runner checkpoints on
        its own (periodically: ``checkpoint_exit_code``) and when it saves on SIGTERM during an
        eviction or a hold (``ON_EXIT_OR_EVICT``): HTCondor uploads checkpoint files only for the
        former (docs/runner.md, "Checkpoints")."""
        travelling = ", ".join([jobcontract.CHECKPOINT_DIR, jobcontract.CONSOLE_LOG_FILE, jobcontract.SCREEN_DIR]
                               + self.written_disks() + self.writable_shares)
        self.set("transfer_output_files", travelling)
        self.set("checkpoint_exit_code", jobcontract.EXIT_CHECKPOINTED)
        self.set("transfer_checkpoint_files", travelling)
        self.set("want_graceful_removal", "true")  # condor_hold, too, lets the runner save the guest
        interval = self.options.checkpoint_interval
        if interval < 0:
            raise InputError(f"the checkpoint interval cannot be negative: {interval}", path=self.spec.source_path)
        self.attr(jobcontract.CHECKPOINT_INTERVAL_ATTR, interval)
        if not interval:
            self.note("checkpoints", "no periodic checkpoint: a node lost outright costs all the work "
                                     "(an eviction still saves the guest)", "warning")

    def written_disks(self) -> list[str]:
        """The sandbox files the guest writes to: a saved state is only consistent with them, so
        they travel with every checkpoint (overlays of staged images, writable transferred disks)."""
        names = [image_overlay_name(name) for name in staged_names(self.spec)]
        if self.options.transfer_disks:
            names += [PurePosixPath(disk.source).name for disk in self.spec.disks
                      if disk.device in ("disk", "lun") and not disk.readonly and disk.source_type == "file"
                      and disk.source and not staged_name(disk.source)]
        return names

    def runner_disks(self) -> None:
        spec = self.spec
        for index, disk in enumerate(spec.disks):
            where = self.disk_element(index, disk)
            if disk.source_type != "file":
                self.note(where, f"a {disk.source_type} disk cannot travel with the job; "
                                 "the runner refuses it", "warning")
                continue
            if not disk.source:
                self.note(where, f"empty {disk.device} drive: nothing to transfer")
                continue
            if staged_name(disk.source):
                self.note(where, f"staged image '{staged_name(disk.source)}': not transferred, the job matches "
                                 "only nodes that have it (VM_IMAGES)")
                continue
            if not self.options.transfer_disks:
                self.note(where, f"not transferred (--no-transfer-disks): {disk.source} must exist "
                                 "on the execute node")
                continue
            self.transfer(self.resolve(disk.source), where)
            if disk.format in jobcontract.UNSAVABLE_FORMATS:
                self.note(where, f"QEMU cannot save a guest with a {disk.format} disk: the runner converts it into "
                                 f"{jobcontract.SAVABLE_FORMAT} before the guest starts, which needs room for its "
                                 "data once more on the execute node (--append request_disk=SIZE)")
        if spec.kernel_boot:
            for path in (spec.kernel_boot.kernel, spec.kernel_boot.initrd):
                if path:
                    self.transfer(self.resolve(path), self.element("kernel"))
        for path in self.options.extra_input_files:
            self.transfer(path, "input file")

    def shared_folders(self) -> None:
        """Each shared folder travels as a folder into the sandbox; the writable ones come back as the
        job's output and with its checkpoints (docs/shared-folders.md)."""
        for index, share in enumerate(self.spec.shared_folders):
            where = self.element("share", index, share.target)
            folder = self.resolve(share.source).rstrip("/")
            if not folder:
                raise InputError(f"{where}: a shared folder needs a source folder", path=self.spec.source_path)
            self.transfer(folder, where)
            if not share.readonly:
                self.writable_shares.append(PurePosixPath(folder).name)

    def vm_attributes(self, hypervisor: str) -> None:
        spec = self.spec
        self.attr("VM_TYPE", ",".join(dict.fromkeys(vm_type_for(name) for name in hypervisor_names(hypervisor))))
        self.attr("VM_HYPERVISOR", hypervisor)
        self.attr("VM_ATTR_SOURCE_FORMAT", spec.source_format)
        self.attr("VM_ATTR_NAME", spec.name)
        self.attr("VM_ATTR_VCPUS", spec.vcpus)
        self.attr("VM_ATTR_MEMORY_MB", math.ceil(spec.memory_bytes / MIB))
        self.attr("VM_ATTR_FIRMWARE", spec.firmware)
        if spec.arch:
            self.attr("VM_ATTR_ARCH", spec.arch)
        self.attr("VM_ATTR_DISKS", len(spec.disks_of("disk")))
        self.attr("VM_ATTR_CDROMS", len(spec.disks_of("cdrom")))
        self.attr("VM_ATTR_FLOPPIES", len(spec.disks_of("floppy")))
        self.attr("VM_ATTR_NICS", len(spec.nics))
        self.attr("VM_ATTR_SHARED_FOLDERS", len(spec.shared_folders))
        self.attr("VM_ATTR_DISK_BUSES", ",".join(self.disk_buses()))
        self.attr("VM_ATTR_NIC_MODELS", ",".join(self.nic_models()))
        self.attr("VM_ATTR_KERNEL_BOOT", spec.kernel_boot is not None)
        if staged_names(spec):
            self.attr("VM_ATTR_IMAGES", ",".join(staged_names(spec)))
        self.attr("VM_ATTR_DISKS_TRANSFERRED", self.options.transfer_disks)
        if self.options.capture_screen:
            self.attr(jobcontract.CAPTURE_SCREEN_ATTR, self.options.capture_screen)
        wishes = {key: value for key, value in spec.extras.items() if key in HYPERVISOR_WISHES}
        if spec.machine:
            wishes["machine"] = spec.machine
        if hypervisor == ANY_HYPERVISOR:
            if wishes:
                self.note(self.element("hypervisor"),
                          f"hypervisor-specific wishes ({', '.join(sorted(wishes))}) stay in the spec "
                          "file only: no hypervisor is named")
            return
        for name in hypervisor_names(hypervisor):
            for key, value in wishes.items():
                self.attr(hypervisor_attr(name, key), value)

    def disk_buses(self) -> list[str]:
        return sorted({d.bus.lower() for d in self.spec.disks if d.bus})

    def nic_models(self) -> list[str]:
        return sorted({n.model.lower() for n in self.spec.nics if n.model})

    def runner_requirements(self, hypervisor: str) -> str:
        """Requirements against the machine ad; every reference scoped, string lists as lists.  A list
        of hypervisors matches a node that runs any one of them, with that one's facts."""
        names = hypervisor_names(hypervisor)
        if names == (ANY_HYPERVISOR,):
            clauses = [f'stringListIMember("{vm_type_for(ANY_HYPERVISOR)}", TARGET.VM_TYPES)',
                       "stringListSize(TARGET.VM_HYPERVISORS) > 0"]
            if self.spec.firmware == "efi":
                self.note(self.element("firmware"),
                          "efi firmware is not matched against 'any' hypervisor: the runner checks it "
                          "after the match", "warning")
        elif len(names) == 1:
            clauses = self.one_hypervisor(hypervisor)[:2]
        else:
            clauses = ["(" + " || ".join(f"({' && '.join(self.one_hypervisor(name))})" for name in names) + ")"]
        clauses += [f"stringListIMember({classad_string(name)}, TARGET.VM_IMAGES)" for name in staged_names(self.spec)]
        # The slot's memory and disk: condor_submit adds TARGET.Memory >= RequestMemory and
        # TARGET.Disk >= RequestDisk itself from request_* (and warns when Requirements names them).
        clauses.append("TARGET.Cpus >= MY.RequestCpus")
        if len(names) == 1 and names != (ANY_HYPERVISOR,):
            clauses += self.hypervisor_clauses(hypervisor)
        return " && ".join(clauses)

    def one_hypervisor(self, hypervisor: str) -> list[str]:
        """The node runs ``hypervisor`` (its VM type, the name), with the facts the job needs of it."""
        return [f'stringListIMember("{vm_type_for(hypervisor)}", TARGET.VM_TYPES)',
                f"stringListIMember({classad_string(hypervisor)}, TARGET.VM_HYPERVISORS)"] \
            + self.hypervisor_clauses(hypervisor)

    def hypervisor_clauses(self, hypervisor: str) -> list[str]:
        """Facts the node advertises for this hypervisor; a fact it does not advertise is not held
        against it (post-match verification on the node has the last word)."""
        max_vcpus = f"TARGET.{hypervisor_attr(hypervisor, 'max_vcpus')}"
        clauses = [f"({max_vcpus} =?= undefined || {max_vcpus} >= MY.VM_ATTR_VCPUS)"]
        if self.spec.firmware == "efi":
            clauses.append(f"TARGET.{hypervisor_attr(hypervisor, 'efi')} =!= false")
        if any(share.driver == "virtiofs" for share in self.spec.shared_folders):
            clauses.append(f"TARGET.{hypervisor_attr(hypervisor, 'virtiofs')} =!= false")
        wanted = (("arches", [self.spec.arch.lower()] if self.spec.arch else []),
                  ("machine_types", [self.spec.machine] if self.spec.machine else []),
                  ("disk_buses", self.disk_buses()), ("nic_models", self.nic_models()))
        for fact, values in wanted:
            listed = f"TARGET.{hypervisor_attr(hypervisor, fact)}"
            for value in values:
                clauses.append(f"({listed} =?= undefined || stringListIMember({classad_string(value)}, {listed}))")
        return clauses

    # the stock VM universe target

    def vm_universe_job(self) -> None:
        spec = self.spec
        self.set("universe", "vm")
        self.set("executable", submit_safe(safe_file_stem(spec.name)))
        self.set("vm_type", self.stock_vm_type())
        self.set("vm_memory", math.ceil(spec.memory_bytes / MIB))
        self.set("request_memory", math.ceil(spec.memory_bytes / MIB))  # the slot's, as condor_submit would default it
        self.set("vm_vcpus", spec.vcpus)
        self.set("vm_disk", self.stock_vm_disk())
        self.stock_networking()
        self.set("input", "/dev/null")
        self.set("output", "/dev/null")
        self.set("error", "/dev/null")
        self.set("initialdir", submit_safe(self.output_dir))
        self.set("log", submit_safe(f"{safe_file_stem(spec.name)}.log"))
        self.set("transfer_input_files", "")  # filled in finish(); the VM universe always transfers them
        self.stock_losses()

    def stock_vm_type(self) -> str:
        hypervisor = self.hypervisor
        stock = [name for name in hypervisor_names(hypervisor) if name in STOCK_VM_TYPES]
        if stock:
            if len(hypervisor_names(hypervisor)) > 1:
                self.note(self.element("hypervisor"), f"the stock VM universe takes one vm_type: {stock[0]}",
                          "warning")
            return stock[0]
        where = self.element("hypervisor")
        if hypervisor == ANY_HYPERVISOR:
            self.note(where, "no hypervisor named: vm_type kvm")
        elif hypervisor == "qemu":
            self.note(where, "the stock VM universe has no plain QEMU: vm_type kvm needs KVM on the node",
                      "warning")
        else:
            self.note(where, f"the stock VM universe cannot run '{hypervisor}': vm_type kvm", "warning")
        return "kvm"

    def stock_vm_disk(self) -> str:
        entries: list[str] = []
        used = {d.target for d in self.spec.disks if d.target}
        spare = (f"vd{chr(ord('a') + i)}" for i in range(26))
        for index, disk in enumerate(self.spec.disks):
            where = self.disk_element(index, disk)
            if disk.source_type != "file" or not disk.source or staged_name(disk.source):
                self.note(where, "dropped: the stock VM universe takes only disk image files it transfers",
                          "warning")
                continue
            if disk.device != "disk":
                self.note(where, f"the stock VM universe has no {disk.device}: attached as a read-only disk",
                          "warning")
            if disk.format is None:
                self.note(where, "no format stated: the stock VM universe lets libvirt guess it", "warning")
            path = self.resolve(disk.source)
            if self.options.transfer_disks:
                self.transfer(path, where)
                path = PurePosixPath(path).name
            target = disk.target or next(t for t in spare if t not in used)
            readonly = disk.readonly or disk.device != "disk"
            fields = [path, target, "r" if readonly else "w"] + ([disk.format] if disk.format else [])
            if any(":" in part or "," in part for part in fields):
                raise TargetError(f"{where}: vm_disk cannot name '{path}' (':' or ',' in it)",
                                  path=self.spec.source_path)
            entries.append(submit_safe(":".join(fields)))
        if not entries:
            raise TargetError("the stock VM universe needs at least one disk image file (vm_disk)",
                              path=self.spec.source_path)
        return ",".join(entries)

    def stock_networking(self) -> None:
        nics = self.spec.nics
        if not nics:
            self.set("vm_networking", "false")
            return
        first = nics[0]
        self.set("vm_networking", "true")
        self.set("vm_networking_type", "bridge" if first.network_kind == "bridge" else "nat")
        if first.mac:
            self.set("vm_macaddr", submit_safe(first.mac))
        if first.model:
            self.note(self.element("nic", 0), f"model '{first.model}' not expressible: the node's default",
                      "warning")
        if first.link == "down":
            self.note(self.element("nic", 0), "link down not expressible: the NIC starts connected", "warning")
        for index in range(1, len(nics)):
            self.note(self.element("nic", index), "dropped: the stock VM universe has one NIC", "warning")

    def stock_losses(self) -> None:
        spec = self.spec
        if spec.firmware == "efi":
            self.note(self.element("firmware"), "efi firmware not expressible: the guest boots with BIOS",
                      "warning")
        if spec.kernel_boot:
            self.note(self.element("kernel"), "direct kernel boot not expressible: dropped", "warning")
        for index, share in enumerate(spec.shared_folders):
            self.note(self.element("share", index, share.target), "shared folders not expressible: dropped",
                      "warning")
        if spec.vcpus_current is not None:
            self.note(self.element("vcpu"), f"{spec.vcpus} vCPUs all online (current {spec.vcpus_current} "
                                            "not expressible)", "warning")

    # common end

    def finish(self) -> None:
        options = self.options
        for path in options.extra_input_files if options.target == "vm-universe" else ():
            self.transfer(path, "input file")
        self.check_sandbox_names()
        files = ",".join(submit_safe(path) for path in self.input_files)
        self.commands = [(k, files) if k == "transfer_input_files" else (k, v)
                         for k, v in self.commands if k != "transfer_input_files" or files]
        if options.batch_name:
            self.set("batch_name", submit_safe(options.batch_name))
        for key, value in options.append:
            self.append(key, value)
        for message in self.spec.warnings:
            self.note(self.spec.source_path or "input", message)
        if options.strict:
            losses = [note for note in self.notes if note.level == "warning"]
            if losses:
                more = f" (and {len(losses) - 1} more)" if len(losses) > 1 else ""
                raise TargetError(f"--strict: target {options.target} cannot express "
                                  f"{losses[0].source}: {losses[0].message}{more}",
                                  path=self.spec.source_path)

    def check_sandbox_names(self) -> None:
        """HTCondor transfers the input files into one flat sandbox folder (and ``vm_disk`` names them
        there): two different files with one base name would overwrite each other."""
        seen: dict[str, str] = {}
        for path in self.input_files:
            name = PurePosixPath(path).name
            if name in seen and seen[name] != path:
                raise InputError(f"two input files share the name '{name}' in the job's sandbox: "
                                 f"{seen[name]} and {path}", path=self.spec.source_path)
            seen[name] = path

    def append(self, key: str, value: str) -> None:
        """``--append KEY=VALUE``: replaces an existing command of that name, else adds one."""
        key = normalize_key(key)
        for index, (name, old) in enumerate(self.commands):
            if name.lower() == key.lower():
                self.commands[index] = (name, value)
                self.note(f"--append {key}", f"replaces '{old}'")
                return
        self.set(key, value)

    def result(self) -> SubmitDescription:
        return SubmitDescription(commands=tuple(self.commands), input_files=tuple(self.input_files),
                                 notes=tuple(self.notes), job_files=tuple(self.job_files),
                                 queue=self.options.queue)


_KEY = re.compile(r"^(\+|MY\.)?[A-Za-z_][A-Za-z0-9_.]*$", re.IGNORECASE)


def normalize_key(key: str) -> str:
    """A submit command name, ``+Attr`` spelled ``MY.Attr`` as condor_submit stores it.

    >>> normalize_key("+Project")
    'MY.Project'
    """
    key = key.strip()
    if not _KEY.match(key):
        raise InputError(f"'{key}' is not a submit command name")
    if key.lower() == "queue":
        raise InputError("the queue statement comes from --queue N")
    if key.startswith("+"):
        return "MY." + key[1:]
    if key[:3].lower() == "my.":
        return "MY." + key[3:]
    return key


def parse_append(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` (or ``KEY = VALUE``) strings as (key, value) pairs.

    >>> parse_append(["+Project = \\"vm\\"", "priority=5"])
    (('MY.Project', '"vm"'), ('priority', '5'))
    """
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise InputError(f"--append '{item}': expected KEY=VALUE")
        if "\n" in value:
            raise InputError(f"--append '{key.strip()}': a value cannot span lines")
        pairs.append((normalize_key(key), value.strip()))
    return tuple(pairs)
