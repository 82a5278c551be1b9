"""The stock VM universe target: a ``universe = vm`` job that today's condor_submit accepts.
What that target cannot express becomes a warning note, or a
:class:`~condor_vmsubmit.errors.TargetError` under ``--strict``.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from ..classads import ANY_HYPERVISOR, hypervisor_names, submit_safe
from ..errors import TargetError
from ..staged import staged_name
from .description import MIB, DescriptionBuilder, safe_file_stem

# The stock VM universe knows these vm_type values (vmware was removed in HTCondor 10).
STOCK_VM_TYPES = ("kvm", "xen")


class VMUniverseJob(DescriptionBuilder):
    """The stock VM universe target's job."""

    def build(self) -> None:
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
        for path in self.options.extra_input_files:
            self.transfer(path, "input file")

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
