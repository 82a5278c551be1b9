"""Removable media end to end: --cdrom, --floppy and --cdrom-from on every frontend, the drives
the runner gives them, the admin switch for host drives, and a real guest reading a built ISO."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from condor_vmsubmit import jobcontract
from condor_vmsubmit.checks.policy import Policy
from condor_vmsubmit.checks.safety import check_domain
from condor_vmsubmit.cli.libvirt_submit import main as libvirt_submit
from condor_vmsubmit.cli.ovf_submit import main as ovf_submit
from condor_vmsubmit.cli.vmdk_submit import main as vmdk_submit
from condor_vmsubmit.domain.render import render_spec, replay_domain
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.errors import InputError
from condor_vmsubmit.isobuild import build_iso
from condor_vmsubmit.media import add_removable
from condor_vmsubmit.spec import Disk, VMSpec

from conftest import REPO, corpus_folder
from guest import configure_node, console, runner_env, stop_and_clean

DOMAIN_RNG = Path("/usr/share/libvirt/schemas/domain.rng")
TTY_OVA = "govmomi__ttylinux-pc_i486-16.1/ttylinux-pc_i486-16.1.ova"
BOOT = 120  # seconds a TCG boot may take on a busy machine (a timeout, not a measurement)


def invoke(command, *args: str, prog: str = "condor_libvirt_submit"):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(command, list(args), prog_name=prog)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """Two ISOs, a floppy image, a folder to build a third ISO from, a qcow2 posing as an ISO."""
    for name in ("one", "two"):
        folder = tmp_path / f"src-{name}"
        folder.mkdir()
        (folder / f"{name}.txt").write_text(name)
        build_iso(folder, tmp_path / f"{name}.iso")
    (tmp_path / "floppy.img").write_bytes(bytes(1440 * 1024))
    (tmp_path / "cidata").mkdir()
    (tmp_path / "cidata" / "user-data").write_text("#cloud-config\n")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "fake.iso"), "1M"], check=True)
    return tmp_path


def media_args(folder: Path) -> list[str]:
    return ["--cdrom", str(folder / "one.iso"), "--cdrom", str(folder / "two.iso"),
            "--floppy", str(folder / "floppy.img"), "--cdrom-from", str(folder / "cidata")]


def kernel_xml(folder: Path) -> Path:
    """A libvirt domain (direct kernel boot, one virtio disk) whose files exist."""
    for name in ("vmlinuz", "initrd.img", "job.img"):
        (folder / name).write_bytes(bytes(65536))
    path = folder / "domain.xml"
    path.write_text(guest_builder_module().domain_xml("media", job_disk="job.img"))
    return path


# --- the pure helper -------------------------------------------------------------------------

def test_several_cdroms_and_floppies_get_drives_of_their_own() -> None:
    spec = VMSpec("vmdk", "vm", 1, 2**30, disks=(Disk(bus="ide", format="raw", source="/d.img"),))
    added = add_removable(spec, ["/a.iso", "/b.iso", "/c.iso", "/d.iso"], ["/f1.img", "/f2.img"])
    assert [(d.device, d.bus, d.target, d.readonly, d.format) for d in added.disks[1:]] == [
        ("cdrom", "ide", "hdc", True, "raw"), ("cdrom", "ide", "hdd", True, "raw"),
        ("cdrom", "ide", "hdb", True, "raw"),  # hda is kept for the IDE disk without a target
        ("cdrom", "sata", "sda", True, "raw"),  # IDE holds four drives
        ("floppy", "fdc", "fda", True, "raw"), ("floppy", "fdc", "fdb", True, "raw")]
    with pytest.raises(InputError, match="a PC has 2 floppy drives"):
        add_removable(spec, floppies=["/1", "/2", "/3"])


def test_a_cdrom_follows_the_bus_the_disks_use() -> None:
    base = VMSpec("ovf", "vm", 1, 2**30)
    scsi = replace(base, disks=(Disk(bus="scsi", target="sda"),))
    assert [(d.bus, d.target) for d in add_removable(scsi, ["/a.iso"]).disks[1:]] == [("scsi", "sdb")]
    q35 = replace(base, machine="pc-q35-7.2", disks=(Disk(bus="virtio"),))
    assert add_removable(q35, ["/a.iso"]).disks[1].bus == "sata"  # q35 has no IDE


def test_render_gives_every_drive_a_distinct_target_and_libvirt_s_schema_accepts_it(tmp_path: Path) -> None:
    spec = VMSpec("vmdk", "vm", 1, 2**30, disks=(Disk(bus="ide", format="raw", source="/s/d.img"),
                                                 Disk(bus="sata", format="raw", source="/s/e.img")))
    spec = add_removable(spec, ["/s/a.iso", "/s/b.iso", "/s/c.iso"], ["/s/f.img", "/s/g.img"])
    root = render_spec(spec, Sandbox(tmp_path), domain_type="qemu", job_id="x#1.0#1")
    drives = [(d.get("device"), d.find("target").get("dev"), d.find("target").get("bus"),
               d.find("readonly") is not None) for d in root.iter("disk")]
    assert len({target for _, target, _, _ in drives}) == len(drives) == 7
    assert [d for d in drives if d[0] != "disk"] == [
        ("cdrom", "sdb", "sata", True), ("cdrom", "sdc", "sata", True), ("cdrom", "sdd", "sata", True),
        ("floppy", "fda", "fdc", True), ("floppy", "fdb", "fdc", True)]
    if DOMAIN_RNG.exists():
        schema = etree.RelaxNG(etree.parse(str(DOMAIN_RNG)))
        assert schema.validate(root), schema.error_log


def test_replayed_user_xml_gets_the_drives_the_options_add(tmp_path: Path, media: Path) -> None:
    xml = kernel_xml(media)
    out = tmp_path / "job"
    result = invoke(libvirt_submit, str(xml), *media_args(media), "--dry-run", "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    spec = VMSpec.from_json((out / jobcontract.SPEC_FILE).read_text())
    user = etree.parse(str(out / jobcontract.DOMAIN_XML_FILE)).getroot()
    root, notes = replay_domain(user, Sandbox(tmp_path / "sandbox"), domain_type="qemu", job_id="x#1.0#1",
                                spec=spec)
    added = [(d.get("device"), d.find("target").get("dev"), Path(d.find("source").get("file")).name)
             for d in root.iter("disk") if d.get("device") != "disk"]
    assert added == [("cdrom", "hdc", "one.iso"), ("cdrom", "hdd", "two.iso"), ("cdrom", "hda", "cidata.iso"),
                     ("floppy", "fda", "floppy.img")]
    assert "<disk device='cdrom'>: cidata.iso added as hda" in notes


# --- every frontend ----------------------------------------------------------------------------

def transferred(result) -> list[str]:  # type: ignore[no-untyped-def]
    assert result.exit_code == 0, result.output
    return [Path(path).name for path in json.loads(result.stdout)["input_files"]]


def test_libvirt_frontend_transfers_every_image_and_builds_the_iso_into_the_output_dir(
        tmp_path: Path, media: Path) -> None:
    out = tmp_path / "job"
    result = invoke(libvirt_submit, str(kernel_xml(media)), *media_args(media), "--dry-run", "--json",
                    "--output-dir", str(out))
    names = transferred(result)
    assert {"one.iso", "two.iso", "floppy.img", "cidata.iso"} <= set(names)
    assert (out / "cidata.iso").read_bytes()[0x8001:0x8006] == b"CD001"
    description = json.loads(result.stdout)["submit"]
    assert "MY.VM_ATTR_CDROMS = 3" in description and "MY.VM_ATTR_FLOPPIES = 1" in description


def test_a_dry_run_without_output_dir_says_where_the_iso_would_go_and_writes_nothing(
        tmp_path: Path, media: Path) -> None:
    before = set(media.rglob("*"))
    result = invoke(libvirt_submit, str(kernel_xml(media)), "--cdrom-from", str(media / "cidata"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "cidata.iso would be built in" in result.stderr and "dry run: nothing written" in result.stderr
    assert "cidata.iso" in result.stdout  # named in transfer_input_files
    assert set(media.rglob("*")) - before == {media / "domain.xml", media / "vmlinuz", media / "initrd.img",
                                              media / "job.img"} - before


def test_vmdk_frontend_uses_the_same_drives(tmp_path: Path, media: Path) -> None:
    result = invoke(vmdk_submit, str(media / "floppy.img"), *media_args(media), "--dry-run", "--json",
                    "--output-dir", str(tmp_path / "job"), prog="condor_vmdk_submit")
    assert {"one.iso", "two.iso", "cidata.iso"} <= set(transferred(result))
    spec = VMSpec.from_json((tmp_path / "job" / jobcontract.SPEC_FILE).read_text())
    assert [(d.device, d.target) for d in spec.disks] == [
        ("disk", None), ("cdrom", "hdc"), ("cdrom", "hdd"), ("cdrom", "hda"), ("floppy", "fda")]


def test_ovf_frontend_uses_the_same_drives(tmp_path: Path, media: Path) -> None:
    appliance = corpus_folder("ovf") / TTY_OVA
    result = invoke(ovf_submit, str(appliance), *media_args(media), "--dry-run", "--json",
                    "--output-dir", str(tmp_path / "job"), prog="condor_ovf_submit")
    names = transferred(result)
    assert {"one.iso", "two.iso", "floppy.img", "cidata.iso"} <= set(names)
    spec = VMSpec.from_json((tmp_path / "job" / jobcontract.SPEC_FILE).read_text())
    assert sum(1 for d in spec.disks if Path(d.source or "").suffix == ".iso") == 3


@pytest.mark.parametrize("args, code, message", [
    (["--cdrom", "{m}/fake.iso"], 3, "a cdrom must be an ISO image, this is a qcow2 image"),
    (["--floppy", "{m}/fake.iso"], 3, "a floppy must be a raw floppy image, this is a qcow2 image"),
    (["--cdrom-from", "{m}/missing"], 3, "--cdrom-from: folder not found"),
    (["--cdrom-from", "{m}/cidata", "--no-transfer-disks"], 3, "cannot be combined with --no-transfer-disks"),
])
def test_refusals_are_one_line_with_their_exit_code(media: Path, args: list[str], code: int,
                                                    message: str) -> None:
    result = invoke(libvirt_submit, str(kernel_xml(media)), "--dry-run",
                    *[arg.format(m=media) for arg in args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("condor_libvirt_submit: error: ") and message in lines[-1]


def test_the_stock_vm_universe_warns_that_cdroms_become_disks_and_strict_refuses(media: Path) -> None:
    args = [str(media / "floppy.img"), "--dry-run", "--target", "vm-universe", "--hypervisor", "kvm",
            "--cdrom", str(media / "one.iso")]
    result = invoke(vmdk_submit, *args, prog="condor_vmdk_submit")
    assert result.exit_code == 0, result.output
    assert "warning: disk #2 (hdc): the stock VM universe has no cdrom: attached as a read-only disk" \
        in result.stderr
    assert "one.iso:hdc:r:raw" in result.stdout
    strict = invoke(vmdk_submit, *args, "--strict", prog="condor_vmdk_submit")
    assert strict.exit_code == 6
    assert "--strict: target vm-universe cannot express disk #2 (hdc): the stock VM universe has no cdrom" \
        in strict.stderr


# --- the admin switch for host drives ------------------------------------------------------------

HOST_CDROM = ("<disk type='block' device='cdrom'><driver name='qemu' type='raw'/>"
              "<source dev='{dev}'/><target dev='hdc' bus='ide'/><readonly/></disk>")


def host_media_domain(sandbox: Path, device: str, dev: str = "/dev/sr0") -> etree._Element:
    drive = HOST_CDROM.format(dev=dev).replace("'cdrom'", f"'{device}'").replace("hdc' bus='ide", "fda' bus='fdc")
    return etree.fromstring(f"<domain type='qemu'><name>x</name><memory>65536</memory><os><type>hvm</type></os>"
                            f"<devices>{drive}</devices></domain>")


@pytest.mark.parametrize("device", ["cdrom", "floppy"])
def test_host_drives_are_refused_unless_the_admin_allows_them(tmp_path: Path, device: str) -> None:
    root = host_media_domain(tmp_path, device)
    refused = [str(r) for r in check_domain(root, tmp_path)]
    assert len(refused) == 1 and f"the host's {device} drive cannot be passed" in refused[0]
    assert "VMSUBMIT_ALLOW_HOST_MEDIA = true" in refused[0]
    allowed = Policy.from_config({"VMSUBMIT_ALLOW_HOST_MEDIA": "True"})
    assert check_domain(root, tmp_path, allow_host_media=allowed.allow_host_media) == []
    assert Policy.from_config({}).allow_host_media is False
    elsewhere = host_media_domain(tmp_path, device, dev=str(tmp_path / "not-a-device"))
    assert "must be a device under /dev" in str(check_domain(elsewhere, tmp_path, allow_host_media=True)[0])


def test_the_switch_does_not_open_host_disks(tmp_path: Path) -> None:
    disk = etree.fromstring("<domain><devices><disk type='block' device='disk'><driver name='qemu' type='raw'/>"
                            "<source dev='/dev/sda'/><target dev='vda'/></disk></devices></domain>")
    assert "reaches host storage" in str(check_domain(disk, tmp_path, allow_host_media=True)[0])
    with pytest.raises(InputError, match="VMSUBMIT_ALLOW_HOST_MEDIA = 'maybe' is not true or false"):
        Policy.from_config({"VMSUBMIT_ALLOW_HOST_MEDIA": "maybe"})


# --- a real guest reads the ISO built with --cdrom-from ------------------------------------------

CDROM_MODULES = ("ata_piix", "sr_mod", "isofs")  # the cloud kernel has them as modules (CONFIG_*=m)
READ_CDROMS = r"""
i=0; while [ ! -b /dev/sr1 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
status=0
for n in 0 1; do
  mkdir -p /cd$n && mount -t iso9660 -o ro /dev/sr$n /cd$n || status=1
done
cat /cd*/answer.txt /cd*/extra.txt || status=2
ls /sys/block
exit $status
"""


@functools.cache
def guest_builder_module():  # type: ignore[no-untyped-def]
    """A private copy of examples/guest/build_guest.py (its MODULES are changed below)."""
    spec = importlib.util.spec_from_file_location("build_guest_media", REPO / "examples/guest/build_guest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cdrom_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny guest with cdrom drivers and ISO 9660 in its initramfs."""
    for tool in ("/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64", "/bin/busybox"):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed")
    builder = guest_builder_module()
    _kernel, release = builder.host_kernel()
    modules_dep = Path("/lib/modules", release, "modules.dep").read_text()
    builder.MODULES = builder.MODULES + tuple(m for m in CDROM_MODULES if f"/{m}.ko" in modules_dep)
    out = tmp_path_factory.mktemp("cdrom-guest")
    builder.build_guest(out)
    builder.write_job_disk(out / "job.img", READ_CDROMS)
    (out / "domain.xml").write_text(builder.domain_xml("cdrom-reader", job_disk="job.img"))
    return out


@pytest.mark.guest
def test_a_guest_reads_the_iso_built_with_cdrom_from(cdrom_guest: Path, tmp_path: Path) -> None:
    data = tmp_path / "answers"
    data.mkdir()
    (data / "answer.txt").write_text("forty-two\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "extra.txt").write_text("from the second cdrom\n")
    build_iso(extra, tmp_path / "extra.iso")
    (tmp_path / "floppy.img").write_bytes(bytes(1440 * 1024))
    out = tmp_path / "job"
    result = invoke(libvirt_submit, str(cdrom_guest / "domain.xml"), "--cdrom-from", str(data),
                    "--cdrom", str(tmp_path / "extra.iso"), "--floppy", str(tmp_path / "floppy.img"),
                    "--hypervisor", "qemu", "--dry-run", "--json", "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    sandbox = Path(tempfile.mkdtemp(prefix="cvm", dir="/tmp"))  # short: libvirt's socket paths
    for path in json.loads(result.stdout)["input_files"]:  # what HTCondor transfers, by base name
        shutil.copyfile(path, sandbox / Path(path).name)
    (sandbox / "job.ad").write_text('ClusterId = 7\nProcId = 0\nGlobalJobId = "test#7.0#1"\n')
    (sandbox / "machine.ad").write_text('Memory = 2048\nCpus = 2\nVM_HYPERVISORS = { "qemu" }\n')
    configure_node(sandbox)
    runner = subprocess.Popen([sys.executable, "-m", "condor_vmsubmit.runner"], cwd=sandbox,
                              env=runner_env(sandbox), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        _, stderr = runner.communicate(timeout=BOOT)
        text = console(sandbox)
        assert runner.returncode == 0, f"{stderr}\n{text}"
        assert "forty-two" in text and "from the second cdrom" in text
        assert "condor-vm-exit-status=0" in text
        # The cloud kernel has no floppy driver: that the domain started with the drive is the proof.
        assert "floppy.img added as fda" in stderr and "cidata" not in stderr
    finally:
        stop_and_clean(runner, sandbox)
