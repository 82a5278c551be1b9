"""VM jobs run end to end in a real HTCondor pool (docs/testing.md).

Each frontend's job is matched, started by the starter through ``condor_vm_runner``, boots its
guest and ends with the guest's exit status, its console back in the submit folder and in the
job's output; a guest with nothing to boot is held with the firmware's words; a running job is
reached with ``condor_ssh_to_job`` + ``condor_vm_control`` (status, console, screenshot); and its
usage reaches the job ad as chirp delayed updates, without flooding the user log.

Marked ``pool``; skipped with a reason unless an execute node of the pool runs the project's
runner and discovery.  The usage test needs the starter to update the schedd often
(``STARTER_UPDATE_INTERVAL = 20``, docs/testing.md); it waits at most ``VMSUBMIT_POOL_TIMEOUT``.
"""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from pool import NEEDS_VM_NODE, condor, job_attr, running_count, submit, wait_until

from condor_vmsubmit import jobcontract

from guest import appliance_ova, bootable_disk, guest_builder

pytestmark = NEEDS_VM_NODE
GUEST_EXIT_STATUS = 7
HELLO = f"echo hello from the guest; exit {GUEST_EXIT_STATUS}"
COUNTER = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.5; done"


def ended(cluster: int) -> dict[str, str]:
    """Wait for the job to leave the queue or be held; its final attributes from the history or queue."""
    attrs = ("JobStatus", "ExitCode", "HoldReason", "HoldReasonSubCode")

    def done() -> bool:
        return job_attr(cluster, "JobStatus") in ("", "4", "5")

    wait_until(done, f"job {cluster} to end")
    line = condor("condor_q", f"{cluster}.0", "-af:t", *attrs).strip() or \
        condor("condor_history", f"{cluster}.0", "-limit", "1", "-af:t", *attrs).strip()
    return dict(zip(attrs, line.split("\t"), strict=True))


def libvirt_job(folder: Path, script: str) -> tuple[str, Path]:
    builder = guest_builder()
    builder.build_guest(folder)
    builder.write_job_disk(folder / "job.img", script)
    (folder / "guest.xml").write_text(builder.domain_xml("guest"))
    return "condor_libvirt_submit", folder / "guest.xml"


def ovf_job(folder: Path, script: str) -> tuple[str, Path]:
    guest_builder().build_guest(folder)
    disk = bootable_disk(folder, folder / "boot.img", script)
    return "condor_ovf_submit", appliance_ova(disk, folder / "guest.ova", name="guest")


def vmdk_job(folder: Path, script: str) -> tuple[str, Path]:
    guest_builder().build_guest(folder)
    disk = bootable_disk(folder, folder / "boot.img", script)
    vmdk = folder / "guest.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(disk), str(vmdk)], check=True)
    disk.unlink()
    return "condor_vmdk_submit", vmdk


@pytest.mark.parametrize("make", [libvirt_job, ovf_job, vmdk_job], ids=["libvirt", "ovf", "vmdk"])
def test_each_frontends_job_runs_its_guest_to_its_exit_status(pool_folder, make):
    folder, clusters = pool_folder
    frontend, source = make(folder, HELLO)
    out = folder / "out"
    cluster = submit(frontend, source, out)
    clusters.append(cluster)
    final = ended(cluster)
    assert (final["JobStatus"], final["ExitCode"]) == ("4", str(GUEST_EXIT_STATUS)), final
    assert "hello from the guest" in (out / jobcontract.CONSOLE_LOG_FILE).read_text(errors="replace")
    (output,) = out.glob(f"*.{cluster}.0.out")  # the console, streamed into the job's output as it ran
    assert "hello from the guest" in output.read_text(errors="replace")


def test_a_guest_with_nothing_to_boot_is_held_with_the_firmware_words(pool_folder):
    folder, clusters = pool_folder
    (folder / "blank.img").write_bytes(bytes(16 << 20))
    (folder / "blank.xml").write_text(
        "<domain type='qemu'><name>blank</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='blank.img'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>")
    cluster = submit("condor_libvirt_submit", folder / "blank.xml", folder / "out")
    clusters.append(cluster)
    final = ended(cluster)
    assert (final["JobStatus"], final["HoldReasonSubCode"]) == ("5", str(jobcontract.EXIT_NOTHING_TO_BOOT)), final
    assert "No bootable device" in final["HoldReason"] and "last-screen.png" in final["HoldReason"], final


def ssh_to_job(cluster: int, command: str) -> str:
    done = subprocess.run(["condor_ssh_to_job", "-auto-retry", str(cluster), command],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ssh_to_job_reaches_the_guests_console_and_screen(pool_folder):
    folder, clusters = pool_folder
    frontend, source = libvirt_job(folder, COUNTER)
    cluster = submit(frontend, source, folder / "out")
    clusters.append(cluster)
    running_count(cluster, 3)
    assert ssh_to_job(cluster, "condor_vm_control status").startswith("running")
    shown = ssh_to_job(cluster, "timeout 5 condor_vm_control console --follow --lines 3; true")
    assert "count=" in shown, shown
    encoded = ssh_to_job(cluster, "condor_vm_control screenshot -o shot.png >/dev/null && base64 -w0 shot.png")
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as shot:
        assert shot.format == "PNG" and shot.width >= 640 and shot.getcolors(maxcolors=1) is None  # not one colour


def test_usage_reaches_the_job_ad_without_flooding_the_user_log(pool_folder):
    folder, clusters = pool_folder
    frontend, source = libvirt_job(folder, COUNTER)
    out = folder / "out"
    cluster = submit(frontend, source, out)
    clusters.append(cluster)
    running_count(cluster, 1)
    wait_until(lambda: job_attr(cluster, "ChirpVMCpuSeconds") not in ("", "undefined"),
               "ChirpVMCpuSeconds in the job ad (is STARTER_UPDATE_INTERVAL short?)")
    assert float(job_attr(cluster, "ChirpVMCpuSeconds")) > 0
    assert int(job_attr(cluster, "ChirpVMMemoryBytes")) > 0
    (log,) = out.glob("*.log")
    assert "Setting job attribute" not in log.read_text(errors="replace")
