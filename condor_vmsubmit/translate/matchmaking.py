"""Requirements of a runner-target job against the machine ad that ``condor_vm_discover`` prints.

Every attribute named here is a definition of :mod:`condor_vmsubmit.attributes`, the one discovery
advertises: a renamed attribute renames the clause.  Every reference is scoped (``TARGET.`` for the
machine, ``MY.`` for the job: the stock machine ad has ``VM_Type`` and ``VM_Memory``, and ClassAd
names are case-insensitive), and string lists are matched as lists.  A fact a node does not
advertise is not held against it: post-match verification on the node has the last word.
"""

from __future__ import annotations

from ..attributes import (
    ARCHES,
    DISK_BUSES,
    EFI,
    JOB_VCPUS,
    MACHINE_TYPES,
    MAX_VCPUS,
    NIC_MODELS,
    VIRTIOFS,
    VM_HYPERVISORS,
    VM_IMAGES,
    VM_TYPES,
)
from ..classads import ANY_HYPERVISOR, classad_string, hypervisor_names, vm_type_for
from ..spec import VMSpec
from ..staged import staged_names


def requirements(spec: VMSpec, hypervisor: str) -> str:
    """The job's Requirements.  A list of hypervisors matches a node that runs any one of them,
    with that one's facts; ``any`` matches a node that runs any libvirt hypervisor."""
    names = hypervisor_names(hypervisor)
    if names == (ANY_HYPERVISOR,):
        clauses = [runs_vm_type(ANY_HYPERVISOR), f"stringListSize({VM_HYPERVISORS.target}) > 0"]
    elif len(names) == 1:
        clauses = one_hypervisor(spec, hypervisor)[:2]
    else:
        clauses = ["(" + " || ".join(f"({' && '.join(one_hypervisor(spec, name))})" for name in names) + ")"]
    clauses += [f"stringListIMember({classad_string(name)}, {VM_IMAGES.target})" for name in staged_names(spec)]
    # The slot's memory and disk: condor_submit adds TARGET.Memory >= RequestMemory and
    # TARGET.Disk >= RequestDisk itself from request_* (and warns when Requirements names them).
    clauses.append("TARGET.Cpus >= MY.RequestCpus")
    if len(names) == 1 and names != (ANY_HYPERVISOR,):
        clauses += hypervisor_clauses(spec, hypervisor)
    return " && ".join(clauses)


def runs_vm_type(hypervisor: str) -> str:
    """The node runs ``hypervisor``'s VM type (libvirt-managed or script-managed)."""
    return f'stringListIMember("{vm_type_for(hypervisor)}", {VM_TYPES.target})'


def one_hypervisor(spec: VMSpec, hypervisor: str) -> list[str]:
    """The node runs ``hypervisor`` (its VM type, the name), with the facts the job needs of it."""
    return [runs_vm_type(hypervisor), f"stringListIMember({classad_string(hypervisor)}, {VM_HYPERVISORS.target})",
            *hypervisor_clauses(spec, hypervisor)]


def hypervisor_clauses(spec: VMSpec, hypervisor: str) -> list[str]:
    """Facts the node advertises for ``hypervisor`` that the guest needs.

    >>> from condor_vmsubmit.spec import VMSpec
    >>> hypervisor_clauses(VMSpec("libvirt", "v", vcpus=1, memory_bytes=2**30, firmware="efi"), "kvm")
    ['(TARGET.VM_KVM_ATTR_MAX_VCPUS =?= undefined || TARGET.VM_KVM_ATTR_MAX_VCPUS >= MY.VM_ATTR_VCPUS)',
     'TARGET.VM_KVM_ATTR_EFI =!= false']
    """
    max_vcpus = MAX_VCPUS.target_of(hypervisor)
    clauses = [f"({max_vcpus} =?= undefined || {max_vcpus} >= MY.{JOB_VCPUS})"]
    if spec.firmware == "efi":
        clauses.append(f"{EFI.target_of(hypervisor)} =!= false")
    if any(share.driver == "virtiofs" for share in spec.shared_folders):
        clauses.append(f"{VIRTIOFS.target_of(hypervisor)} =!= false")
    wanted = ((ARCHES, [spec.arch.lower()] if spec.arch else []),
              (MACHINE_TYPES, [spec.machine] if spec.machine else []),
              (DISK_BUSES, disk_buses(spec)), (NIC_MODELS, nic_models(spec)))
    for fact, values in wanted:
        listed = fact.target_of(hypervisor)
        for value in values:
            clauses.append(f"({listed} =?= undefined || stringListIMember({classad_string(value)}, {listed}))")
    return clauses


def disk_buses(spec: VMSpec) -> list[str]:
    """The buses of the guest's drives, lower case, sorted."""
    return sorted({disk.bus.lower() for disk in spec.disks if disk.bus})


def nic_models(spec: VMSpec) -> list[str]:
    """The guest's NIC models, lower case, sorted."""
    return sorted({nic.model.lower() for nic in spec.nics if nic.model})
