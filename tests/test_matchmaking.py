"""Offline matchmaking with classad2: the translator's Requirements against machine ads.

The machine ads below advertise what docs/attributes.md says execute nodes advertise
(VM_TYPES, VM_HYPERVISORS, VM_<HV>_ATTR_*) next to the stock VM universe attributes
(HasVM, VM_Type, VM_Memory), whose names clash case-insensitively with the job's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import classad2
import htcondor2  # noqa: F401 - registers HTCondor's string-list functions with classad2
import pytest

from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import SharedFolder, VMSpec
from condor_vmsubmit.translate import TranslateOptions, translate

from jobads import INPUT_KIB, job_ad

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "libvirt"

# condor_submit's names for the request commands in the job ad.

HYPERVISOR_FACTS = {"MAX_VCPUS": "255", "EFI": "true", "DISK_BUSES": '"ide,fdc,scsi,virtio,usb,sata"',
                    "NIC_MODELS": '"virtio,e1000,e1000e,rtl8139"', "ARCHES": '"i686,x86_64"',
                    "MACHINE_TYPES": '"pc,pc-i440fx-7.2,q35,pc-q35-7.2"', "VIRTIOFS": "false"}




def machine_ad(**changes: str | None) -> classad2.ClassAd:
    """A slot on a node running kvm and qemu; ``NAME=None`` drops an attribute."""
    attrs = {"MyType": '"Machine"', "Requirements": "true", "Cpus": "8", "Memory": "16384",
             "Disk": "100000000", "HasVM": "true", "VM_Type": '"kvm"', "VM_Memory": "16384",
             "VM_TYPES": '"libvirt-managed"', "VM_HYPERVISORS": '"qemu,kvm"'}
    for hypervisor in ("QEMU", "KVM"):
        attrs.update({f"VM_{hypervisor}_ATTR_{k}": v for k, v in HYPERVISOR_FACTS.items()})
    attrs.update(changes)
    return classad2.ClassAd("[" + "; ".join(f"{k} = {v}" for k, v in attrs.items() if v is not None) + "]")


def matches(spec: VMSpec, machine: classad2.ClassAd, **options) -> bool:
    job = job_ad(translate(spec, TranslateOptions(output_dir="/o", **options)))
    return machine.matches(job) and job.matches(machine)


@pytest.fixture(scope="module")
def web() -> VMSpec:
    """kvm, efi, 4 vCPUs, 4 GiB, virtio and sata disks, virtio NICs."""
    return load(EXAMPLES / "webserver.xml")


@pytest.fixture(scope="module")
def minimal() -> VMSpec:
    return load(EXAMPLES / "minimal.xml")


def test_matches_a_node_that_advertises_what_the_vm_needs(web: VMSpec, minimal: VMSpec) -> None:
    assert matches(web, machine_ad())
    assert matches(minimal, machine_ad())


def test_facts_a_node_does_not_advertise_are_not_held_against_it(web: VMSpec) -> None:
    bare = {f"VM_KVM_ATTR_{fact}": None for fact in HYPERVISOR_FACTS}
    assert matches(web, machine_ad(**bare))


def test_fails_without_the_hypervisor(web: VMSpec) -> None:
    assert not matches(web, machine_ad(VM_HYPERVISORS='"qemu"'))
    assert not matches(web, machine_ad(VM_HYPERVISORS=None))


def test_fails_with_too_little_memory(web: VMSpec) -> None:
    assert not matches(web, machine_ad(Memory="4096")), "4 GiB guest needs its QEMU overhead too"
    assert matches(web, machine_ad(Memory="5000"))


def test_fails_with_too_little_disk_for_inputs_and_saved_state(web: VMSpec) -> None:
    assert not matches(web, machine_ad(Disk=str(INPUT_KIB + 4 * 1024**2 - 1)))
    assert matches(web, machine_ad(Disk=str(INPUT_KIB + 4 * 1024**2)))


def test_fails_with_the_wrong_vm_type(web: VMSpec) -> None:
    assert not matches(web, machine_ad(VM_TYPES='"script-managed"'))


def test_stock_vm_universe_attributes_do_not_match(web: VMSpec) -> None:
    """A node with only the stock HasVM/VM_Type/VM_Memory must not look like ours."""
    assert not matches(web, machine_ad(VM_TYPES=None, VM_HYPERVISORS=None))


def test_fails_with_too_few_cpus_or_vcpus(web: VMSpec) -> None:
    assert not matches(web, machine_ad(Cpus="2"))
    assert not matches(web, machine_ad(VM_KVM_ATTR_MAX_VCPUS="2"))


def test_efi_needs_firmware(web: VMSpec, minimal: VMSpec) -> None:
    assert not matches(web, machine_ad(VM_KVM_ATTR_EFI="false"))
    assert matches(minimal, machine_ad(VM_QEMU_ATTR_EFI="false"))


def test_disk_bus_and_nic_model_must_be_offered(web: VMSpec) -> None:
    assert not matches(web, machine_ad(VM_KVM_ATTR_DISK_BUSES='"ide,virtio"'))
    assert not matches(web, machine_ad(VM_KVM_ATTR_NIC_MODELS='"e1000"'))


def test_hypervisor_choice_from_the_command_line(web: VMSpec) -> None:
    qemu_only = machine_ad(VM_HYPERVISORS='"qemu"')
    assert matches(web, qemu_only, hypervisor="qemu")
    assert matches(web, qemu_only, hypervisor="any")
    assert not matches(web, machine_ad(VM_HYPERVISORS='""'), hypervisor="any")
    assert not matches(web, qemu_only, hypervisor="xen")


def test_architecture_and_machine_type_must_be_offered(web: VMSpec) -> None:
    assert not matches(web, machine_ad(VM_KVM_ATTR_ARCHES='"aarch64"'))
    assert not matches(web, machine_ad(VM_KVM_ATTR_MACHINE_TYPES='"pc,pc-i440fx-7.2"')), "web01 wants q35"


def test_virtiofs_shares_need_virtiofs(web: VMSpec) -> None:
    shared = replace(web, shared_folders=(SharedFolder(source="/data", target="data", driver="virtiofs"),))
    assert not matches(shared, machine_ad())
    assert matches(shared, machine_ad(VM_KVM_ATTR_VIRTIOFS="true"))
    nine_p = replace(web, shared_folders=(SharedFolder(source="/data", target="data", driver="9p"),))
    assert matches(nine_p, machine_ad())


def test_a_list_of_hypervisors_matches_a_node_that_runs_any_of_them(minimal: VMSpec) -> None:
    qemu_only = machine_ad(VM_HYPERVISORS='"qemu"')
    scripted = machine_ad(VM_TYPES='"script-managed"', VM_HYPERVISORS='"virtualbox"')
    assert matches(minimal, qemu_only, hypervisor="kvm,qemu")
    assert not matches(minimal, qemu_only, hypervisor="kvm")
    assert not matches(minimal, machine_ad(VM_HYPERVISORS='"xen"'), hypervisor="kvm,qemu")
    # a list of VM types: a libvirt hypervisor or an admin's script
    assert matches(minimal, scripted, hypervisor="kvm,virtualbox") and not matches(minimal, scripted, hypervisor="kvm")
    job = dict(translate(minimal, TranslateOptions(hypervisor="kvm,virtualbox")).commands)
    assert job["MY.VM_TYPE"] == '"libvirt-managed,script-managed"' and job["MY.VM_HYPERVISOR"] == '"kvm,virtualbox"'
    # the facts of the one that matches count: a node whose qemu has too few vCPUs does not match
    assert not matches(replace(minimal, vcpus=8), machine_ad(VM_HYPERVISORS='"qemu"', VM_QEMU_ATTR_MAX_VCPUS="4"),
                       hypervisor="kvm,qemu")
    assert translate(minimal, TranslateOptions(hypervisor="qemu,any")).commands == \
        translate(minimal, TranslateOptions(hypervisor="any")).commands
