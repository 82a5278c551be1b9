"""Post-match verification against real classad2 machine ads and real images made by qemu-img."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import classad2
import pytest

from condor_vmsubmit.formats import load
from condor_vmsubmit.formats.libvirt import spec_from_domain
from condor_vmsubmit.runner.verify import verify_match
from condor_vmsubmit.spec import Disk, VMSpec
from condor_vmsubmit.xmlsafe import parse_bytes

MIB = 2**20


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def slot(memory_mib: int = 2048, cpus: int = 2) -> classad2.ClassAd:
    """A slot ad in the form the starter writes to $_CONDOR_MACHINE_AD."""
    return classad2.parseOne(f'MyType = "Machine"\nName = "slot1@node"\nCpus = {cpus}\nMemory = {memory_mib}\n'
                             f'TotalMemory = {memory_mib * 4}\nHasVM = false\n')


DOMAIN = """<domain type='{type}'>
  <name>job</name>
  <memory unit='GiB'>1</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type>hvm</type><kernel>/home/u/vmlinuz</kernel><initrd>/home/u/initrd.img</initrd></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/home/u/images/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
  </devices>
</domain>"""


def libvirt_spec(type_: str = "qemu", vcpus: int = 2) -> VMSpec:
    return spec_from_domain(parse_bytes(DOMAIN.format(type=type_, vcpus=vcpus).encode(), "job.xml"), "job.xml")


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    box = tmp_path / "sandbox"
    box.mkdir()
    qemu_img("create", "-f", "qcow2", box / "disk.qcow2", "64M")
    (box / "vmlinuz").write_bytes(b"kernel")
    (box / "initrd.img").write_bytes(b"initrd")
    return box


def test_a_job_that_fits(sandbox: Path) -> None:
    assert verify_match(libvirt_spec(), slot(), sandbox, {"qemu"}) == []


def test_memory_plus_overhead_must_fit_the_slot(sandbox: Path) -> None:
    # 1 GiB of guest memory + 256 MiB + 10 % = 1383 MiB (what the translator requests).
    assert verify_match(libvirt_spec(), slot(memory_mib=1383), sandbox, {"qemu"}) == []
    assert verify_match(libvirt_spec(), slot(memory_mib=1382), sandbox, {"qemu"}) == [
        "the guest needs 1383 MiB (1 GiB of memory plus QEMU overhead) but this slot has 1382 MiB"]


def test_vcpus_must_fit_the_slot(sandbox: Path) -> None:
    assert verify_match(libvirt_spec(vcpus=4), slot(cpus=2), sandbox, {"qemu"}) == [
        "the guest has 4 vcpus but this slot has 2 cpus"]


def test_slot_values_are_evaluated_and_missing_ones_reported(sandbox: Path) -> None:
    computed = classad2.ClassAd("[DetectedMemory = 4096; Memory = DetectedMemory / 2; Cpus = 1 + 1]")
    assert verify_match(libvirt_spec(), computed, sandbox, {"qemu"}) == []
    assert verify_match(libvirt_spec(), classad2.ClassAd(), sandbox, {"qemu"}) == [
        "the machine ad has no Memory: cannot tell whether the guest fits",
        "the machine ad has no Cpus: cannot tell whether the vcpus fit"]


def test_the_hypervisor_must_be_usable_here(sandbox: Path) -> None:
    assert verify_match(libvirt_spec("kvm"), slot(), sandbox, {"qemu"}) == [
        "hypervisor 'kvm' is not usable on this host (usable: qemu)"]
    assert verify_match(libvirt_spec("kvm"), slot(), sandbox, {"kvm", "qemu"}) == []
    anything = replace(libvirt_spec(), hypervisor="any")
    assert verify_match(anything, slot(), sandbox, {"qemu-direct"}) == []
    assert verify_match(anything, slot(), sandbox, set()) == ["no hypervisor is usable on this host"]


def test_disks_and_kernel_must_be_in_the_sandbox(sandbox: Path) -> None:
    (sandbox / "disk.qcow2").unlink()
    (sandbox / "initrd.img").unlink()
    assert verify_match(libvirt_spec(), slot(), sandbox, {"qemu"}) == [
        "disk 1 (vda): disk.qcow2 is not in the job's sandbox", "initrd initrd.img is not in the job's sandbox"]


def test_the_disk_format_must_be_the_one_claimed(sandbox: Path) -> None:
    (sandbox / "disk.qcow2").unlink()
    qemu_img("create", "-f", "raw", sandbox / "disk.qcow2", "64M")
    assert verify_match(libvirt_spec(), slot(), sandbox, {"qemu"}) == [
        "disk 1 (vda): disk.qcow2 is a raw image, not qcow2 as the job says"]


def test_a_disk_with_a_backing_file_is_a_problem(sandbox: Path, tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", tmp_path / "base.qcow2", "64M")
    qemu_img("create", "-f", "qcow2", "-b", tmp_path / "base.qcow2", "-F", "qcow2", sandbox / "disk.qcow2")
    (problem,) = verify_match(libvirt_spec(), slot(), sandbox, {"qemu"})
    assert problem.startswith(f"disk 1 (vda): qcow2 image has a backing file '{tmp_path / 'base.qcow2'}'")


@pytest.mark.parametrize("subformat", ["monolithicSparse", "streamOptimized", "monolithicFlat"])
def test_a_vmdk_job_is_checked_against_the_image_it_was_made_from(tmp_path: Path, subformat: str) -> None:
    submitted = tmp_path / "submit"
    submitted.mkdir()
    qemu_img("create", "-f", "vmdk", "-o", f"subformat={subformat}", submitted / "appliance.vmdk", "10M")
    spec = load(submitted / "appliance.vmdk", "vmdk")
    assert spec.disks[0].capacity_bytes == 10 * MIB
    box = tmp_path / "sandbox"
    shutil.copytree(submitted, box)
    assert verify_match(spec, slot(), box, {"qemu"}) == []
    for extra in box.iterdir():
        extra.unlink()
    qemu_img("create", "-f", "vmdk", "-o", f"subformat={subformat}", box / "appliance.vmdk", "12M")
    assert verify_match(spec, slot(), box, {"qemu"}) == [
        "disk 1: appliance.vmdk holds 12582912 bytes (12 MiB), not the 10485760 bytes the job says"]


def test_a_missing_vmdk_extent_is_a_problem(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", tmp_path / "flat.vmdk", "1M")
    (tmp_path / "flat-flat.vmdk").unlink()
    spec = VMSpec("vmdk", "flat", 1, 512 * MIB, disks=(Disk(format="vmdk", source=str(tmp_path / "flat.vmdk")),))
    (problem,) = verify_match(spec, slot(), tmp_path, {"qemu"})
    assert problem.startswith("disk 1: ") and "flat-flat.vmdk" in problem and "missing" in problem


def test_non_file_disks_and_empty_drives(sandbox: Path) -> None:
    spec = replace(libvirt_spec(), disks=(Disk(device="cdrom", target="hdc"),
                                          Disk(source="rbd://ceph/pool/img", source_type="network", target="vdb"),
                                          Disk(device="cdrom", source="/dev/sr0", source_type="block", target="hdd")))
    assert verify_match(spec, slot(), sandbox, {"qemu"}) == [
        "disk 2 (vdb): a network disk cannot come with the job"]


def test_iso_images_count_as_raw(sandbox: Path) -> None:
    (sandbox / "cd.iso").write_bytes(bytes(2048))
    spec = replace(libvirt_spec(), disks=(Disk(device="cdrom", format="iso", source="/x/cd.iso", target="hdc"),))
    assert verify_match(spec, slot(), sandbox, {"qemu"}) == []
