"""Offline matchmaking: the translator's jobs against the REAL discovery output of this machine.

The machine ad is what ``condor_vm_discover`` printed here (session libvirtd, QEMU, the
``qemu-direct`` script) plus the slot's own Cpus/Memory/Disk; the job ad is what
condor_submit makes of :func:`condor_vmsubmit.translate.translate`'s commands.  A second
discovery runs against a libvirtd whose UEFI firmware descriptors are masked: a real node
without OVMF.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import classad2
import htcondor2  # noqa: F401 - registers HTCondor's string-list functions with classad2
import pytest

from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import VMSpec
from condor_vmsubmit.translate import TranslateOptions, translate

from jobads import job_ad
from libvirt_session import kernel_banner_under, parse_cron, run_discover, session_libvirtd, string_list

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "libvirt"
# A big slot, so that only the VM facts decide (request_cpus follows the vCPUs).
SLOT = {"MyType": '"Machine"', "Requirements": "true", "Cpus": "1024", "Memory": "1048576",
        "Disk": "1000000000"}


def discovered(*, mask_firmware: bool = False, script_dir: Path | None = None) -> dict[str, str]:
    """Run discovery against a fresh session libvirtd (long timeout: it is that daemon's first run)."""
    state = Path(tempfile.mkdtemp(prefix="vmdisc-state-", dir="/tmp"))  # short: libvirt sockets go in it
    try:
        with session_libvirtd(mask_firmware=mask_firmware) as uri:
            scripts = ("--script-dir", str(script_dir)) if script_dir else ()
            done = run_discover("--uri", uri, "--state-dir", str(state), "--timeout", "90", *scripts)
        assert done.returncode == 0, done.stderr
        return parse_cron(done.stdout)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    scripts = tmp_path_factory.mktemp("scripts")
    script = scripts / "qemu-direct"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m condor_vmsubmit.scripts.qemu_direct "$@"\n')
    script.chmod(0o755)
    return discovered(script_dir=scripts)


@pytest.fixture(scope="module")
def node_without_firmware() -> dict[str, str]:
    return discovered(mask_firmware=True)


def machine_ad(discovery: dict[str, str]) -> classad2.ClassAd:
    """The slot's ad: its resources plus the cron output, read as the startd reads it (old syntax)."""
    lines = "".join(f"{name} = {value}\n" for name, value in {**SLOT, **discovery}.items())
    return classad2.parseOne(lines, classad2.ParserType.Old)


def matches(spec: VMSpec, discovery: dict[str, str], hypervisor: str | None = None) -> bool:
    job = job_ad(translate(spec, TranslateOptions(output_dir="/o", hypervisor=hypervisor)))
    machine = machine_ad(discovery)
    return bool(machine.matches(job) and job.matches(machine))


@pytest.fixture(scope="module")
def minimal() -> VMSpec:
    """qemu, bios, 1 vCPU, an ide disk."""
    return load(EXAMPLES / "minimal.xml")


@pytest.fixture(scope="module")
def kernel_boot() -> VMSpec:
    """qemu, x86_64, machine pc, a virtio NIC."""
    return load(EXAMPLES / "kernel-boot.xml")


@pytest.fixture(scope="module")
def web() -> VMSpec:
    """kvm, efi, q35, 4 vCPUs, virtio and sata disks, virtio NICs."""
    return load(EXAMPLES / "webserver.xml")


def test_qemu_and_any_jobs_match_this_node(node: dict[str, str], minimal: VMSpec, kernel_boot: VMSpec,
                                           web: VMSpec) -> None:
    assert matches(minimal, node)
    assert matches(kernel_boot, node)
    assert matches(web, node, hypervisor="qemu")
    assert matches(web, node, hypervisor="any")
    assert matches(minimal, node, hypervisor="any")


def test_kvm_jobs_do_not_match_where_kvm_is_not_advertised(node: dict[str, str], minimal: VMSpec,
                                                          web: VMSpec) -> None:
    kvm_here = "kvm" in string_list(node["VM_HYPERVISORS"])
    assert matches(web, node) is kvm_here
    assert matches(minimal, node, hypervisor="kvm") is kvm_here
    if not kernel_banner_under("kvm", 8):  # on the test machines KVM guests hang after the BIOS
        assert not kvm_here


def test_more_vcpus_than_advertised_do_not_match(node: dict[str, str], minimal: VMSpec) -> None:
    most = int(node["VM_QEMU_ATTR_MAX_VCPUS"])
    assert matches(replace(minimal, vcpus=most), node)
    assert not matches(replace(minimal, vcpus=most + 1), node)


def test_efi_matches_only_where_firmware_exists(node: dict[str, str], node_without_firmware: dict[str, str],
                                               web: VMSpec, minimal: VMSpec) -> None:
    assert node_without_firmware["VM_QEMU_ATTR_EFI"] == "false"
    assert not matches(web, node_without_firmware, hypervisor="qemu")
    assert matches(minimal, node_without_firmware)
    assert matches(web, node, hypervisor="qemu") is (node["VM_QEMU_ATTR_EFI"] == "true")


def test_facts_the_node_lacks_keep_jobs_away(node: dict[str, str], kernel_boot: VMSpec) -> None:
    assert not matches(replace(kernel_boot, machine="virt"), node)   # an ARM machine type
    assert not matches(replace(kernel_boot, arch="aarch64"), node)
    assert matches(replace(kernel_boot, machine="q35"), node)


def test_script_managed_jobs_match_the_discovered_script(node: dict[str, str], minimal: VMSpec) -> None:
    assert "script-managed" in string_list(node["VM_TYPES"])
    assert matches(minimal, node, hypervisor="qemu-direct")
    assert not matches(minimal, node, hypervisor="vbox-direct")
