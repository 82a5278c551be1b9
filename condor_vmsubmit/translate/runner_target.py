"""The runner target: a vanilla-universe job whose executable is the execute-side runner
(``condor_vm_runner``).  The spec file, the user's domain XML and the disks travel in
``transfer_input_files``; ``VM_*`` job attributes describe the VM, and Requirements
(:mod:`.matchmaking`) match what execute nodes advertise.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import PurePosixPath

from .. import jobcontract
from ..attributes import (
    JOB_ARCH,
    JOB_CDROMS,
    JOB_DISK_BUSES,
    JOB_DISKS,
    JOB_DISKS_TRANSFERRED,
    JOB_FIRMWARE,
    JOB_FLOPPIES,
    JOB_HYPERVISOR,
    JOB_IMAGES,
    JOB_KERNEL_BOOT,
    JOB_MEMORY_MB,
    JOB_NAME,
    JOB_NIC_MODELS,
    JOB_NICS,
    JOB_SHARED_FOLDERS,
    JOB_SOURCE_FORMAT,
    JOB_VCPUS,
    JOB_VM_TYPE,
)
from ..classads import ANY_HYPERVISOR, hypervisor_attr, hypervisor_names, submit_safe, vm_type_for
from ..errors import InputError
from ..jobcontract import request_memory_mib
from ..spec import VMSpec
from ..staged import image_overlay_name, staged_name, staged_names
from .description import MIB, DescriptionBuilder, JobFile, TranslateOptions, safe_file_stem
from .matchmaking import disk_buses, nic_models, requirements

# spec.extras keys that say how the guest wants to be run, emitted as VM_<HV>_ATTR_<KEY>; the other
# extras are facts about the source (image CIDs, appliance product names) and stay in the spec file.
HYPERVISOR_WISHES = frozenset({"os_type", "cpu_mode", "cpu_model", "scsi_controller"})


class RunnerJob(DescriptionBuilder):
    """The runner target's job."""

    def __init__(self, spec: VMSpec, options: TranslateOptions):
        super().__init__(spec, options)
        self.writable_shares: list[str] = []  # folder names in the sandbox, shared writable with the guest

    def build(self) -> None:
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
        self.set("requirements", requirements(spec, hypervisor))
        if hypervisor_names(hypervisor) == (ANY_HYPERVISOR,) and spec.firmware == "efi":
            self.note(self.element("firmware"), "efi firmware is not matched against 'any' hypervisor: the runner "
                                                "checks it after the match", "warning")
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
        self.attr(JOB_VM_TYPE, ",".join(dict.fromkeys(vm_type_for(name) for name in hypervisor_names(hypervisor))))
        self.attr(JOB_HYPERVISOR, hypervisor)
        self.attr(JOB_SOURCE_FORMAT, spec.source_format)
        self.attr(JOB_NAME, spec.name)
        self.attr(JOB_VCPUS, spec.vcpus)
        self.attr(JOB_MEMORY_MB, math.ceil(spec.memory_bytes / MIB))
        self.attr(JOB_FIRMWARE, spec.firmware)
        if spec.arch:
            self.attr(JOB_ARCH, spec.arch)
        self.attr(JOB_DISKS, len(spec.disks_of("disk")))
        self.attr(JOB_CDROMS, len(spec.disks_of("cdrom")))
        self.attr(JOB_FLOPPIES, len(spec.disks_of("floppy")))
        self.attr(JOB_NICS, len(spec.nics))
        self.attr(JOB_SHARED_FOLDERS, len(spec.shared_folders))
        self.attr(JOB_DISK_BUSES, ",".join(disk_buses(spec)))
        self.attr(JOB_NIC_MODELS, ",".join(nic_models(spec)))
        self.attr(JOB_KERNEL_BOOT, spec.kernel_boot is not None)
        if staged_names(spec):
            self.attr(JOB_IMAGES, ",".join(staged_names(spec)))
        self.attr(JOB_DISKS_TRANSFERRED, self.options.transfer_disks)
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
