"""The disk-image adapter (spec around an image) and `condor_vmdk_submit` on real images."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from condor_vmsubmit.cli.main import main as vmsubmit
from condor_vmsubmit.cli.vmdk_submit import main as vmdk_submit
from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.formats import load, sniff
from condor_vmsubmit.formats.vmdk import build, parse_nic
from condor_vmsubmit.spec import Nic, VMSpec

from conftest import REPO, corpus_folder

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
SCHEMA = json.loads((REPO / "condor_vmsubmit" / "schemas" / "vmspec.schema.json").read_text())


def qemu_img(folder: Path, *args: str) -> None:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, cwd=folder)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Real images: a split VMDK, a qcow2 with its base, a raw disk, an ISO-like raw file."""
    qemu_img(tmp_path, "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse,adapter_type=lsilogic",
             "split.vmdk", "3G")
    qemu_img(tmp_path, "create", "-q", "-f", "qcow2", "base.qcow2", "1G")
    qemu_img(tmp_path, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "overlay.qcow2")
    qemu_img(tmp_path, "create", "-q", "-f", "raw", "data.img", "64M")
    (tmp_path / "tools.iso").write_bytes(b"\x00" * 32768 + b"\x01CD001\x01" + bytes(2041))
    return tmp_path


@pytest.mark.parametrize("name, bus, controller", [
    ("gen__msparse-ide-hw4-10M.vmdk", "ide", None),
    ("gen__msparse-lsilogic-hw6-10M.vmdk", "scsi", "lsilogic"),
    ("gen__msparse-buslogic-hw6-10M.vmdk", "scsi", "buslogic"),
    ("gen__msparse-legacyESX-hw4-1G.vmdk", "scsi", "buslogic"),
    ("gen__msparse-default-1M.vmdk", "ide", None),
    ("gen__raw-mislabeled-1M.vmdk", "virtio", None),
])
def test_bus_follows_the_adapter_type(name: str, bus: str, controller: str | None) -> None:
    path = corpus_folder("vmdk") / name
    assert sniff(path) == "vmdk"
    spec = load(path)
    disk = spec.disks[0]
    assert (spec.source_format, disk.bus, spec.extras.get("scsi_controller")) == ("vmdk", bus, controller)
    assert disk.format == spec.extras["image_format"] and disk.format in ("vmdk", "raw")
    assert disk.capacity_bytes and disk.source == str(path)


def test_a_version_3_sparse_vmdk_is_refused_as_it_cannot_be_written(tmp_path: Path) -> None:
    qemu_img(tmp_path, "create", "-q", "-f", "vmdk", "cbt.vmdk", "10M")
    data = bytearray((tmp_path / "cbt.vmdk").read_bytes())
    data[4] = 3
    (tmp_path / "cbt.vmdk").write_bytes(data)
    with pytest.raises(InputError, match="version 3 .* read-only"):
        load(tmp_path / "cbt.vmdk")


def test_a_raw_disk_named_vmdk_runs_as_raw_and_says_so() -> None:
    spec = load(corpus_folder("vmdk") / "gen__raw-mislabeled-1M.vmdk")
    assert spec.disks[0].format == "raw" and spec.nics[0].model == "virtio"
    assert any("QEMU reads it as a raw disk" in warning for warning in spec.warnings)


def test_images_without_a_telling_name_are_sniffed_by_content(images: Path) -> None:
    shutil.copyfile(images / "base.qcow2", images / "disk")
    assert sniff(images / "disk") == "vmdk"
    assert load(images / "disk").disks[0].format == "qcow2"


def test_defaults_are_stated_and_options_replace_them(images: Path) -> None:
    spec = load(images / "split.vmdk")
    assert (spec.vcpus, spec.memory_bytes, spec.firmware, spec.hypervisor) == (1, 1024**3, "bios", None)
    assert spec.nics == (Nic(model="e1000", network_kind="user"),)
    stated = " ".join(spec.warnings)
    for word in ("1 vCPU", "1 GiB", "BIOS", "e1000"):
        assert word in stated
    spec = load(images / "split.vmdk", cpus=4, memory="3GiB", firmware="efi", hypervisor="kvm",
                nics=["network:default,model=virtio,mac=52:54:00:00:00:01"])
    assert (spec.vcpus, spec.memory_bytes, spec.firmware, spec.hypervisor) == (4, 3 * 1024**3, "efi", "kvm")
    assert spec.nics[0] == Nic(model="virtio", mac="52:54:00:00:00:01", network="default", network_kind="network")
    assert spec.warnings == ()


def test_image_facts_are_in_the_extras(images: Path) -> None:
    spec, files = build(images / "split.vmdk")
    extras = spec.extras
    assert (extras["create_type"], extras["adapter_type"], extras["hw_version"]) == \
        ("twoGbMaxExtentSparse", "lsilogic", "4")
    assert extras["parent_cid"] == "ffffffff" and len(extras["cid"]) == 8
    assert "split-s002.vmdk (SPARSE, 1073741824 bytes)" in extras["extents"]
    assert files == (str(images / "split-s001.vmdk"), str(images / "split-s002.vmdk"))
    assert spec.disks[0].capacity_bytes == 3 * 1024**3
    jsonschema.validate(json.loads(spec.to_json()), SCHEMA)
    assert VMSpec.from_json(spec.to_json()) == spec


def test_extra_disks_cdroms_and_no_network(images: Path) -> None:
    spec = load(images / "data.img", extra_disks=[images / "split.vmdk"], cdroms=[images / "tools.iso"],
                nics=["none"])
    assert [(d.device, d.bus, d.format, d.readonly) for d in spec.disks] == [
        ("disk", "virtio", "raw", False), ("disk", "scsi", "vmdk", False), ("cdrom", "scsi", "raw", True)]
    assert spec.nics == ()
    with pytest.raises(InputError, match="cdrom must be an ISO image, this is a qcow2"):
        load(images / "data.img", cdroms=[images / "base.qcow2"])


def test_backing_chain_only_when_allowed(images: Path) -> None:
    with pytest.raises(UnsafeInputError, match="backing file 'base.qcow2'"):
        load(images / "overlay.qcow2")
    spec, files = build(images / "overlay.qcow2", allow_backing=True)
    assert spec.disks[0].backing == "base.qcow2" and spec.disks[0].format == "qcow2"
    assert files == (str(images / "base.qcow2"),)
    assert spec.extras["backing_chain"] == "overlay.qcow2 (qcow2) <- base.qcow2 (qcow2)"


@pytest.mark.parametrize("text, message", [
    ("bridge", "bridge:NAME"), ("user:x", "start with"), ("user,speed=10", "model="),
    ("user,mac=zz", "MAC address"), ("user,link=sideways", "up or down"),
])
def test_bad_nic_options_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_nic(text)


def test_inspect_shows_the_image_and_its_defaults() -> None:
    path = corpus_folder("vmdk") / "gen__stream-lsilogic-hw6-10M.vmdk"
    result = CliRunner().invoke(vmsubmit, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["disks"][0]["format"] == "vmdk" and data["extras"]["create_type"] == "streamOptimized"
    assert any("1 GiB" in warning for warning in data["warnings"])


def test_dry_run_transfers_every_extent_and_says_the_defaults(images: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(vmdk_submit, [str(images / "split.vmdk"), "-dry-run", "--json", "--memory", "2GiB",
                                              "--output-dir", str(tmp_path / "job")])
    assert result.exit_code == 0, result.output
    description = json.loads(result.stdout)
    inputs = [Path(p).name for p in description["input_files"]]
    assert {"split.vmdk", "split-s001.vmdk", "split-s002.vmdk", "vmspec.json"} <= set(inputs)
    messages = " ".join(note["message"] for note in description["notes"])
    assert "1 vCPU" in messages and "BIOS" in messages and "e1000" in messages and "1 GiB" not in messages
    spec = VMSpec.from_json((tmp_path / "job" / "vmspec.json").read_text())
    assert spec.memory_bytes == 2 * 1024**3 and spec.disks[0].bus == "scsi"


def test_every_frontend_option_reaches_the_spec(images: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(vmdk_submit, [
        str(images / "split.vmdk"), "-cpus", "3", "--memory", "1536M", "--firmware", "efi", "--hypervisor", "QEMU",
        "--disk", str(images / "data.img"), "--cdrom", str(images / "tools.iso"),
        "--nic", "user,model=virtio,link=down", "--nic", "network:default", "--dry-run", "--output-dir",
        str(tmp_path / "job")])
    assert result.exit_code == 0, result.output
    spec = VMSpec.from_json((tmp_path / "job" / "vmspec.json").read_text())
    assert (spec.vcpus, spec.memory_bytes, spec.firmware, spec.hypervisor) == (3, 1536 * 1024**2, "efi", "qemu")
    assert [(d.device, Path(d.source).name) for d in spec.disks] == [
        ("disk", "split.vmdk"), ("disk", "data.img"), ("cdrom", "tools.iso")]
    assert [(n.network_kind, n.model, n.link) for n in spec.nics] == [("user", "virtio", "down"),
                                                                      ("network", None, "up")]
    assert "transfer_input_files" in result.stdout and "tools.iso" in result.stdout


def test_dry_run_with_allow_backing_transfers_the_parent(images: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(vmdk_submit, [str(images / "overlay.qcow2"), "--dry-run", "--json",
                                              "--allow-backing", "--output-dir", str(tmp_path / "job")])
    assert result.exit_code == 0, result.output
    inputs = [Path(p).name for p in json.loads(result.stdout)["input_files"]]
    assert "overlay.qcow2" in inputs and "base.qcow2" in inputs


@pytest.mark.parametrize("name, code, reason", [
    ("overlay.qcow2", 4, "backing file 'base.qcow2'"),
    ("split-s001.vmdk", 3, "extent of a split image"),
    ("missing.vmdk", 3, "cannot read"),
])
def test_refusals_are_one_line_with_their_exit_code(images: Path, name: str, code: int, reason: str) -> None:
    result = CliRunner().invoke(vmdk_submit, [str(images / name), "--dry-run"], prog_name="condor_vmdk_submit")
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("condor_vmdk_submit: error: ") and reason in lines[0]


@pytest.mark.pool
def test_a_split_vmdk_job_reaches_the_schedd_with_every_extent(images: Path, tmp_path: Path) -> None:
    """Marked pool: submitted on hold to a real schedd, its ad checked, then removed."""
    from pool import pool_reachable

    why_not = pool_reachable()
    if why_not:
        pytest.skip(f"no pool: {why_not}")
    import htcondor2

    result = subprocess.run(["condor_vmdk_submit", str(images / "split.vmdk"), "--cpus", "2", "-append", "hold=true",
                             "--output-dir", str(tmp_path / "job")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cluster = int(result.stdout.split("cluster ")[-1].rstrip(".\n"))
    schedd = htcondor2.Schedd()
    try:
        (ad,) = schedd.query(f"ClusterId == {cluster}")
        transferred = {Path(p).name for p in ad["TransferInput"].split(",")}
        assert {"split.vmdk", "split-s001.vmdk", "split-s002.vmdk", "vmspec.json"} <= transferred
        assert (ad["VM_ATTR_SOURCE_FORMAT"], ad["VM_ATTR_VCPUS"], ad["VM_ATTR_DISK_BUSES"]) == ("vmdk", 2, "scsi")
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")
