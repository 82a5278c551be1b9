"""Real users' VMs boot: domain XML as virt-install and ``virsh dumpxml`` write it, run as jobs
with ``condor_libvirt_submit --local`` (the corpus is made at test time: tests/realvms.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from realvms import (
    COMBINATIONS,
    GUEST_UP,
    defined_xml,
    running_xml,
    system_libvirtd,
    virt_install_xml,
)

from condor_vmsubmit import jobcontract
from condor_vmsubmit.runner.guard import GuardianProcess

from guest import guest_builder

pytestmark = pytest.mark.guest

# Started on this host's TCG by a private system libvirtd: user-mode networking (it has no
# networks) and a CPU mode TCG gives (virt-install --virt-type qemu picks one itself).
RUNNING = [name for name, (options, _) in COMBINATIONS.items()
           if "network=default" not in options and "host-passthrough" not in options]
KINDS = [(name, kind) for name in COMBINATIONS for kind in ("virt-install", "defined")] + \
        [(name, "running") for name in RUNNING]


def run_local(xml: Path, timeout: float = 240) -> tuple[int, str, float]:
    """Run ``xml`` with ``--local`` as on a host without HTCondor: a pool's configuration on this
    host would bring its admin's policy (``VMSUBMIT_MAX_VCPUS = 8`` refuses the overcommit domain)."""
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-c", "from condor_vmsubmit.cli.libvirt_submit import main; main()",
                              str(xml), "--local"], check=False, capture_output=True, text=True, timeout=timeout,
                             cwd=xml.parent,  # --local brings a last screen back into the working folder
                             env={**os.environ, "CONDOR_CONFIG": os.devnull})
    # rich wraps the warnings at the terminal's width: one space for any run of white space
    return process.returncode, " ".join((process.stdout + process.stderr).split()), time.monotonic() - started


@pytest.fixture(scope="session")
def boot_disk(guest_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("virt-install", "virsh", "syslinux", "mcopy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    builder = guest_builder()
    return builder.build_boot_disk(builder.Guest(guest_dir / "vmlinuz", guest_dir / "initrd.img"),
                                   tmp_path_factory.mktemp("disk") / "boot.img")


@pytest.fixture(scope="session")
def corpus(boot_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every combination as virt-install prints it and as virsh dumps it defined; the RUNNING
    ones also as dumped while running under a system libvirtd with its security drivers."""
    folder = tmp_path_factory.mktemp("corpus")
    files: dict[tuple[str, str], Path] = {}

    def keep(name: str, kind: str, xml: str) -> None:
        files[name, kind] = folder / f"{name}.{kind}.xml"
        files[name, kind].write_text(xml)

    session = GuardianProcess(Path(tempfile.mkdtemp(prefix="cvm-vi-", dir="/tmp")), all_drivers=True)
    try:
        session.wait_until_listening()
        for name in COMBINATIONS:
            xml = virt_install_xml(session.uri, name, boot_disk)
            keep(name, "virt-install", xml)
            keep(name, "defined", defined_xml(session.uri, xml, folder))
    finally:
        session.stop()
    with system_libvirtd() as uri:
        for name in RUNNING:
            user_net = [] if "--network" in COMBINATIONS[name][0] else ["--network", "user"]
            xml = virt_install_xml(uri, name, boot_disk, "--virt-type", "qemu", *user_net)
            keep(name, "running", running_xml(uri, xml, folder))
    return files


def test_the_corpus_is_what_real_tools_write(corpus):
    """The runtime state and desktop devices the runner must deal with are really there."""
    assert len(COMBINATIONS) >= 15
    texts = {key: path.read_text() for key, path in corpus.items()}
    installed = [t for (_, kind), t in texts.items() if kind == "virt-install"]
    running = [t for (_, kind), t in texts.items() if kind == "running"]
    assert sum("type=\"spicevmc\"" in t for t in installed) >= 5
    assert sum("org.qemu.guest_agent.0" in t for t in installed) >= 5
    assert any("host-passthrough" in t for t in installed) and any("host-model" in t for t in installed)
    assert any("maxvcpus" in t or "current=" in t for t in installed)
    assert all("<seclabel type='dynamic' model='dac'" in t for t in running), running[0]
    assert all("<alias name=" in t and "/dev/pts/" in t for t in running)
    assert any("/var/lib/libvirt/qemu/channel/target/" in t for t in running)


@pytest.mark.parametrize(("name", "kind"), KINDS, ids=[f"{n}.{k}" for n, k in KINDS])
def test_every_real_domain_boots_as_a_local_job(corpus, name, kind):
    code, output, seconds = run_local(corpus[name, kind])
    assert code == 0, output
    assert GUEST_UP in output
    assert "guest exited with status 0" in output
    with open(os.environ.get("VMSUBMIT_BOOT_TIMES", "/dev/null"), "a") as times:
        times.write(f"{name}.{kind} {seconds:.1f}\n")


def test_notes_name_what_was_dropped(corpus):
    code, output, _ = run_local(corpus["debian11-q35-defaults", "virt-install"])
    assert code == 0, output
    for element in ("<redirdev type='spicevmc'>", "<channel type='spicevmc'>", "<sound model='ich9'>",
                    "<input type='tablet'>", "<cpu mode='host-passthrough'>"):
        assert element in output, output


def test_more_vcpus_than_cores_runs_with_a_warning(corpus):
    code, output, _ = run_local(corpus["debian11-overcommit", "virt-install"])
    assert code == 0, output
    assert f"may use up to 16 vCPUs (4 at start), more than the {os.cpu_count()} cores" in output


@pytest.mark.parametrize("firmware", ["bios", "efi"])
def test_an_empty_disk_is_held_with_nothing_to_boot(corpus, tmp_path, firmware):
    name = "fedora37-uefi-nographics-scsi" if firmware == "efi" else "debian11-pc-vnc-hostmodel"
    empty = tmp_path / "boot.img"
    empty.write_bytes(b"\0" * (16 << 20))
    xml = tmp_path / "empty.xml"
    xml.write_text(corpus[name, "virt-install"].read_text().replace(str(corpus_disk(corpus)), str(empty)))
    code, output, seconds = run_local(xml, timeout=180)
    assert code == jobcontract.EXIT_NOTHING_TO_BOOT, output
    assert "the guest found nothing to boot" in output
    assert seconds < 120


def corpus_disk(corpus: dict[tuple[str, str], Path]) -> str:
    text = next(iter(corpus.values())).read_text()
    return text.split("<source file=\"", 1)[1].split("\"", 1)[0]


def test_a_uefi_disk_on_lsilogic_boots_from_virtio_scsi(boot_disk, tmp_path):
    """A VMware disk (adapter lsilogic) booted with UEFI: OVMF has no LSI driver, so the runner
    gives the disk a virtio-scsi controller and says so."""
    vmdk = tmp_path / "appliance.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "adapter_type=lsilogic,subformat=streamOptimized",
                    str(boot_disk), str(vmdk)], check=True)
    process = subprocess.run([sys.executable, "-c", "from condor_vmsubmit.cli.vmdk_submit import main; main()",
                              str(vmdk), "--firmware", "efi", "--memory", "256MiB", "--local"],
                             check=False, capture_output=True, text=True, timeout=300)
    output = " ".join((process.stdout + process.stderr).split())
    assert process.returncode == 0, output
    assert "<controller type='scsi' model='default (lsilogic)'>: UEFI firmware cannot boot from it" in output
    assert GUEST_UP in output
