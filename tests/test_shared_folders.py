"""Shared folders: a folder of the job travels into the sandbox, the guest mounts it, and what the
guest wrote there comes back as the job's output.

The guest tests boot the tiny guest (tests/guest.py) with the virtiofs and 9p modules in its
initramfs.  The cloud kernel (linux-image-cloud-amd64) has no 9p: the 9p mount needs
linux-image-amd64 installed next to it, else only the 9p device is shown reaching the guest.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from condor_vmsubmit import jobcontract
from condor_vmsubmit.checks.safety import check_domain
from condor_vmsubmit.cli.libvirt_submit import main as libvirt_submit
from condor_vmsubmit.domain.render import render_spec
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.domain.shares import add_filesystems, plan_shares
from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.runner.shares import virtiofs_daemons, virtiofsd
from condor_vmsubmit.shared_folders import add_shares
from condor_vmsubmit.spec import SharedFolder
from condor_vmsubmit.translate import TranslateOptions, translate

from guest import (
    console,
    guest_builder,
    guest_spec,
    make_sandbox,
    processes_mentioning,
    start_runner,
    stop_and_clean,
    wait_for,
)

BOOT = 120  # a timeout for a TCG boot on a busy machine, not a measurement
VIRTIO_9P, VIRTIO_FS = "0x0009", "0x001a"  # virtio device ids


def _folder(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


# --- without a guest


def test_share_options_send_the_folders_and_bring_back_the_writable_ones(tmp_path):
    results = _folder(tmp_path, "results", {})
    inputs = _folder(tmp_path, "inputs", {"a.txt": "a"})
    xml = tmp_path / "vm.xml"
    xml.write_text(guest_builder().domain_xml("shares"))
    done = CliRunner().invoke(libvirt_submit, [str(xml), "--dry-run", "--json", "--output-dir", str(tmp_path / "o"),
                                               "--share", str(results), "-share", f"{inputs}:in:ro"])
    assert done.exit_code == 0, done.output
    description = json.loads(done.stdout)
    commands = dict(description["commands"])
    assert str(results) in description["input_files"] and str(inputs) in description["input_files"]
    assert commands["transfer_output_files"].split(", ")[-1] == "results"  # the writable share comes back, not "in"
    assert commands["transfer_output_files"] == commands["transfer_checkpoint_files"]
    spec = json.loads((tmp_path / "o" / jobcontract.SPEC_FILE).read_text())
    assert spec["shared_folders"] == [
        {"source": str(results), "target": "results", "driver": None, "readonly": False},
        {"source": str(inputs), "target": "in", "driver": None, "readonly": True}]


def test_share_values_are_checked(tmp_path):
    _folder(tmp_path, "a", {})
    for bad, message in ((f"{tmp_path}/missing", "not a folder"), (f"{tmp_path}/a:bad tag", "tag"),
                         (f"{tmp_path}/a:x:y:z", "DIR"), (f"{tmp_path}/a.txt", "not a folder")):
        with pytest.raises(InputError, match=message):
            add_shares(guest_spec(), [bad])
    with pytest.raises(InputError, match="folder name 'a'"):
        add_shares(guest_spec(), [f"{tmp_path}/a:x", f"{tmp_path}/a:y"])


def test_the_runner_renders_virtiofs_with_shared_memory_or_9p(tmp_path):
    sandbox = Sandbox(tmp_path)
    spec = replace(guest_spec(),
                   shared_folders=(SharedFolder("/u/data", "data"), SharedFolder("/u/in", "in", readonly=True)))
    for virtiofs in (True, False):
        root = render_spec(spec, sandbox, domain_type="qemu", job_id="t#1.0#1")
        add_filesystems(root, plan_shares(spec, sandbox, virtiofs_available=virtiofs))
        filesystems = root.findall("devices/filesystem")
        assert [fs.find("target").get("dir") for fs in filesystems] == ["data", "in"]
        if virtiofs:
            assert [fs.find("source").get("socket") for fs in filesystems] == [
                f"{tmp_path}/.vm/fs0.sock", f"{tmp_path}/.vm/fs1.sock"]
            assert root.find("memoryBacking/source").get("type") == "memfd"
            assert root.find("memoryBacking/access").get("mode") == "shared"
        else:
            assert [fs.find("source").get("dir") for fs in filesystems] == [f"{tmp_path}/data", f"{tmp_path}/in"]
            assert [fs.get("accessmode") for fs in filesystems] == ["mapped", "mapped"]
            assert [fs.find("readonly") is not None for fs in filesystems] == [False, True]
            assert root.find("memoryBacking") is None
        assert check_domain(root, tmp_path) == []


def test_a_replayed_filesystem_outside_the_sandbox_becomes_the_sandbox_folder(tmp_path):
    user = etree.fromstring(guest_builder().domain_xml("x").replace(
        "<devices>", "<devices><filesystem type='mount'><source dir='/etc'/><target dir='etc'/></filesystem>"))
    assert check_domain(user, tmp_path)  # as the user wrote it: refused
    spec = replace(guest_spec(), shared_folders=(SharedFolder("/etc", "etc"),))
    add_filesystems(user, plan_shares(spec, Sandbox(tmp_path), virtiofs_available=False))
    assert [fs.find("source").get("dir") for fs in user.findall("devices/filesystem")] == [f"{tmp_path}/etc"]


# --- with a guest


@pytest.fixture(scope="module")
def guest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64", "/bin/busybox"):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed")
    out = tmp_path_factory.mktemp("guest")
    guest_builder().build_guest(out, shares=True)
    return out


@pytest.fixture
def cleanup():
    made: list[tuple] = []
    yield made
    for runner, sandbox in made:
        stop_and_clean(runner, sandbox)


def _run(guest_dir: Path, cleanup: list, script: str, job_id: str, shares: tuple[SharedFolder, ...],
         files: dict[str, str]):
    spec = replace(guest_spec(), shared_folders=shares)
    sandbox = make_sandbox(guest_dir, script, job_id=job_id, spec=spec)
    for share in shares:
        _folder(sandbox, Path(share.source).name, files)
    runner = start_runner(sandbox)
    cleanup.append((runner, sandbox))
    return runner, sandbox


@pytest.mark.guest
def test_the_guest_reads_its_input_and_writes_its_result_through_virtiofs(guest_dir, cleanup):
    if virtiofsd() is None:
        pytest.skip("the runner cannot start virtiofsd here (it needs root and QEMU's virtiofsd)")
    script = ("mkdir -p /mnt && mount -t virtiofs work /mnt || exit 9; read q < /mnt/question.txt; "
              "echo \"answer to $q: $(($q))\" > /mnt/answer.txt; mkdir /mnt/sub; echo deep > /mnt/sub/x; "
              "umount /mnt; exit 0")
    runner, sandbox = _run(guest_dir, cleanup, script, "41.0", (SharedFolder("/home/u/work", "work"),),
                           {"question.txt": "6*7\n"})
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 0, stderr + console(sandbox)
    assert (sandbox / "work" / "answer.txt").read_text() == "answer to 6*7: 42\n"
    assert (sandbox / "work" / "sub" / "x").read_text() == "deep\n"
    wait_for(lambda: not processes_mentioning(str(sandbox / ".vm")), 30, "virtiofsd and libvirtd to go away")
    assert not (sandbox / ".vm").exists()


@pytest.mark.guest
def test_the_guest_reads_its_input_and_writes_its_result_through_9p(guest_dir, cleanup):
    builder = guest_builder()
    if not builder.host_kernels(builder.SHARE_MODULES):
        pytest.skip("no guest kernel with 9p here (apt-get install linux-image-amd64)")
    script = ("mkdir -p /mnt && mount -t 9p -o trans=virtio,version=9p2000.L work /mnt || exit 9; "
              "read q < /mnt/question.txt; echo \"answer to $q: $(($q))\" > /mnt/answer.txt; "
              "mkdir -p /ro && mount -t 9p -o trans=virtio,version=9p2000.L in /ro || exit 9; "
              "echo x > /ro/x || echo read-only-refused; umount /mnt /ro; exit 0")
    runner, sandbox = _run(guest_dir, cleanup, script, "43.0", (SharedFolder("/home/u/work", "work", driver="9p"),
                                                                SharedFolder("/home/u/in", "in", "9p", True)),
                           {"question.txt": "6*7\n"})
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 0, stderr + console(sandbox)
    assert (sandbox / "work" / "answer.txt").read_text() == "answer to 6*7: 42\n"
    answer = os.stat(sandbox / "work" / "answer.txt")
    assert (answer.st_uid, answer.st_mode & 0o7000) == (os.geteuid(), 0)  # mapped: host owner is the job's
    assert "read-only-refused" in console(sandbox) and not (sandbox / "in" / "x").exists()


@pytest.mark.guest
def test_a_9p_export_reaches_the_guest(guest_dir, cleanup):
    """Without a 9p kernel for the guest, at least the export is shown reaching it."""
    builder = guest_builder()
    if builder.host_kernels(builder.SHARE_MODULES):
        pytest.skip("the 9p mount test covers it")
    script = "cat /sys/bus/virtio/devices/*/device; exit 0"
    runner, sandbox = _run(guest_dir, cleanup, script, "42.0", (SharedFolder("/home/u/p9", "p9", driver="9p"),), {})
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 0, stderr
    devices = console(sandbox).split()
    assert VIRTIO_9P in devices and VIRTIO_FS not in devices
    assert os.listdir(sandbox / "p9") == []


def test_local_runs_refuse_shared_folders_clearly(tmp_path):
    _folder(tmp_path, "results", {})
    xml = tmp_path / "vm.xml"
    xml.write_text(guest_builder().domain_xml("shares"))
    done = CliRunner().invoke(libvirt_submit, [str(xml), "--local", "--share", str(tmp_path / "results")])
    assert done.exit_code == InputError.exit_code, done.output
    assert "--local does not take shared folders yet" in done.output


def test_a_share_cannot_name_a_folder_outside_the_sandbox(tmp_path):
    spec = replace(guest_spec(), shared_folders=(SharedFolder("/home/u/..", "up"),))
    with pytest.raises(UnsafeInputError, match="does not name a folder of the sandbox"):
        plan_shares(spec, Sandbox(tmp_path), virtiofs_available=True)
    (tmp_path / "root").symlink_to("/")  # virtiofsd would export whatever it points at
    spec = replace(guest_spec(), shared_folders=(SharedFolder("/home/u/root", "root"),))
    shares = plan_shares(spec, Sandbox(tmp_path), virtiofs_available=True)
    with pytest.raises(UnsafeInputError, match="not a plain folder"):
        with virtiofs_daemons(shares):
            pass


def test_a_shared_folder_may_not_take_the_sandbox_name_of_another_input():
    spec = replace(guest_spec(), shared_folders=(SharedFolder("/data/job.img", "data"),))
    with pytest.raises(InputError, match="share the name 'job.img'"):
        translate(spec, TranslateOptions(output_dir="/o"))
