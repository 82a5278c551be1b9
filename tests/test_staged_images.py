"""Staged images: an admin's base image on the node, a job's data disk, an overlay in the sandbox.

The guest tests boot the tiny guest (tests/guest.py) whose program lives on a staged
base image; it reads its input from the job's data disk and writes its result there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree
from test_matchmaking import machine_ad, matches

from condor_vmsubmit import jobcontract
from condor_vmsubmit.checks.safety import check_domain
from condor_vmsubmit.discover.ad import Observations, build_ad
from condor_vmsubmit.domain.render import replay_domain
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.errors import InputError
from condor_vmsubmit.runner.overlays import attach_backing, use_staged_images
from condor_vmsubmit.spec import Disk
from condor_vmsubmit.staged import StagedImageError, add_image, find_image, list_images
from condor_vmsubmit.translate import TranslateOptions, translate

from guest import console, counts, guest_builder, guest_spec, make_sandbox, start_runner, stop_and_clean, wait_for

BOOT = 120  # a timeout for a TCG boot on a busy machine, not a measurement
PROGRAM = """echo staged-base-running
input=$(head -c 12 /dev/vdb)
echo "result:$input" | dd of=/dev/vdb bs=4096 seek=1 conv=notrunc 2>/dev/null
echo overlay-write | dd of=/dev/vda bs=4096 seek=8 conv=notrunc 2>/dev/null
exit 5
"""


def _image_dir(tmp: Path) -> Path:
    """An admin's image folder: ``tinyos.qcow2`` holding the guest's program, and a stray file."""
    folder = tmp / "images"
    folder.mkdir()
    raw = guest_builder().write_job_disk(tmp / "program.raw", PROGRAM)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(folder / "tinyos.qcow2")],
                   check=True)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- without a guest


def test_the_spec_names_the_staged_image_and_the_job_matches_only_nodes_that_have_it(tmp_path):
    spec = add_image(guest_spec(), "tinyos")
    assert [(d.source, d.target) for d in spec.disks] == [("staged:tinyos", "vda"), ("/home/user/vm/job.img", "vdb")]
    description = translate(spec, TranslateOptions(output_dir=str(tmp_path)))
    commands = dict(description.commands)
    assert not any("tinyos" in path for path in description.input_files)
    assert "/home/user/vm/job.img" in description.input_files  # the data disk travels
    # the overlay and the transferred data disk are what the guest writes: both travel with a checkpoint
    assert commands["transfer_checkpoint_files"] == (f"{jobcontract.CHECKPOINT_DIR}, {jobcontract.CONSOLE_LOG_FILE}, "
                                                     f"{jobcontract.SCREEN_DIR}, staged-tinyos.overlay.qcow2, job.img")
    assert matches(spec, machine_ad(VM_IMAGES='"debian-12,TinyOS"'))
    assert not matches(spec, machine_ad(VM_IMAGES='"debian-12"'))
    assert not matches(spec, machine_ad(VM_IMAGES=None))


def test_names_cannot_be_paths():
    for name in ("../etc/passwd", "a/b", "x,y", ".hidden", ""):
        with pytest.raises(InputError):
            add_image(guest_spec(), name)


def test_discovery_lists_the_staged_images(tmp_path):
    folder = _image_dir(tmp_path)
    (folder / "win.raw").write_bytes(bytes(4096))
    (folder / "outside.qcow2").symlink_to(tmp_path / "program.raw")  # resolves outside the folder
    assert sorted(list_images(folder)) == ["tinyos", "win"]
    ad = build_ad(Observations(libvirt=None, images=tuple(list_images(folder))))
    assert ad["VM_IMAGES"] == '"tinyos,win"'
    assert build_ad(Observations(libvirt=None))["VM_IMAGES"] == '""'


def test_a_staged_image_is_checked_from_its_headers(tmp_path):
    folder = _image_dir(tmp_path)
    assert find_image(folder, "tinyos") == (folder / "tinyos.qcow2", "qcow2")
    shutil.copyfile(folder / "tinyos.qcow2", folder / "liar.raw")
    with pytest.raises(StagedImageError, match="is a qcow2 image, not raw"):
        find_image(folder, "liar")
    with pytest.raises(StagedImageError, match="not in"):
        find_image(folder, "missing")
    with pytest.raises(StagedImageError, match="no image folder"):
        find_image(None, "tinyos")


def _overlay_disk(overlay: Path, base: Path, fmt: str = "qcow2") -> etree._Element:
    return etree.fromstring(f"""<domain type='qemu'><devices><disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{overlay}'/>
      <backingStore type='file'><format type='{fmt}'/><source file='{base}'/><backingStore/></backingStore>
      <target dev='vda' bus='virtio'/></disk></devices></domain>""")


def test_safety_accepts_only_a_chain_into_the_image_folder(tmp_path):
    folder = _image_dir(tmp_path)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    base = folder / "tinyos.qcow2"
    overlay = sandbox / "staged-tinyos.overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)],
                   check=True)
    assert check_domain(_overlay_disk(overlay, base), sandbox, image_dir=folder) == []
    # Without the admin's folder, or with a base elsewhere, the chain is refused.
    refused = check_domain(_overlay_disk(overlay, base), sandbox)
    assert any("backing store is not allowed" in r.reason for r in refused)
    assert any("outside the job's sandbox" in r.reason for r in refused)
    elsewhere = tmp_path / "program.raw"
    refused = check_domain(_overlay_disk(overlay, elsewhere, "raw"), sandbox, image_dir=folder)
    assert any("outside the job's sandbox" in r.reason for r in refused)
    # An overlay whose own header points outside the folder, even with a staged <backingStore>.
    sneaky = sandbox / "sneaky.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(elsewhere), "-F", "raw", str(sneaky)],
                   check=True)
    refused = check_domain(_overlay_disk(sneaky, base), sandbox, image_dir=folder)
    assert [r.reason for r in refused] == [f"the overlay sneaky.qcow2 does not read through a staged image in {folder}"]
    # The overlay disk itself without <backingStore>: libvirt would read the chain from its header.
    plain = etree.fromstring(f"""<domain type='qemu'><devices><disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{overlay}'/><target dev='vda' bus='virtio'/>
      </disk></devices></domain>""")
    assert any("backing file" in r.reason for r in check_domain(plain, sandbox, image_dir=folder))


# --- with a guest


@pytest.fixture
def cleanup():
    made: list[tuple] = []
    yield made
    for runner, sandbox in made:
        stop_and_clean(runner, sandbox)


def _run(guest_dir: Path, cleanup: list, image_dir: Path, job_id: str, **kwargs):
    spec = add_image(guest_spec(), "tinyos")
    sandbox = make_sandbox(guest_dir, "", job_id=job_id, spec=spec, **kwargs)
    data = sandbox / "job.img"  # the job's data disk: its input, then room for the result
    data.write_bytes(b"data-in:4242" + bytes(65536 - 12))
    runner = start_runner(sandbox, knobs={"VMSUBMIT_IMAGE_DIR": str(image_dir)})
    cleanup.append((runner, sandbox))
    return runner, sandbox


@pytest.mark.guest
def test_a_guest_runs_from_a_staged_base_and_writes_its_data_disk(guest_dir, cleanup, tmp_path):
    image_dir = _image_dir(tmp_path)
    before = _digest(image_dir / "tinyos.qcow2")
    runner, sandbox = _run(guest_dir, cleanup, image_dir, "31.0")
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 5, stderr
    assert "staged-base-running" in console(sandbox)
    assert (sandbox / "job.img").read_bytes()[4096:4096 + 20] == b"result:data-in:4242\n"
    overlay = sandbox / "staged-tinyos.overlay.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(image_dir / "tinyos.qcow2")
    assert _digest(image_dir / "tinyos.qcow2") == before, "the guest's write reached the staged base"
    written = subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", f"if={overlay}",
                              f"of={tmp_path / 'view.raw'}", "bs=4096", "count=9"], capture_output=True)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "view.raw").read_bytes()[8 * 4096:8 * 4096 + 13] == b"overlay-write"


@pytest.mark.guest
def test_a_replayed_domain_names_the_staged_image_as_its_disk_source(guest_dir, cleanup, tmp_path):
    image_dir = _image_dir(tmp_path)
    xml = guest_builder().domain_xml("replayed", job_disk="staged:tinyos").replace(
        "<target dev='vda' bus='virtio'/>\n    </disk>",
        "<target dev='vda' bus='virtio'/>\n    </disk>\n    <disk type='file' device='disk'>"
        "<driver name='qemu' type='raw'/><source file='/home/u/job.img'/><target dev='vdb' bus='virtio'/></disk>")
    runner, sandbox = _run(guest_dir, cleanup, image_dir, "32.0", domain_xml=xml)
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == 5, stderr
    assert (sandbox / "job.img").read_bytes()[4096:4096 + 20] == b"result:data-in:4242\n"


@pytest.mark.guest
def test_a_node_without_the_image_holds_the_job_before_anything_starts(guest_dir, cleanup, tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    runner, sandbox = _run(guest_dir, cleanup, empty, "33.0")
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == jobcontract.EXIT_MISMATCH, stderr
    assert "staged image 'tinyos' is not in" in stderr
    assert not console(sandbox)  # nothing ran: the console log is empty (it exists: an output file)


def test_image_adds_the_staged_disk_to_a_replayed_domain_that_lacks_it(tmp_path):
    folder = _image_dir(tmp_path)
    sandbox = Sandbox(tmp_path / "sandbox")
    sandbox.root.mkdir()
    guest_builder().write_job_disk(sandbox.root / "job.img", "")
    for name in ("vmlinuz", "initrd.img"):
        (sandbox.root / name).write_bytes(b"")
    spec, chains = use_staged_images(add_image(replace(guest_spec(), disks=(
        Disk(bus="virtio", format="raw", source="/u/job.img", target="vda"),)), "tinyos"), sandbox, str(folder))
    assert [d.target for d in spec.disks] == ["vdb", "vda"]
    user = etree.fromstring(guest_builder().domain_xml("x", job_disk="/u/job.img"))
    root, _ = replay_domain(user, sandbox, domain_type="qemu", job_id="t#1.0#1", spec=spec)
    attach_backing(root, chains, sandbox)
    disks = {d.find("target").get("dev"): d for d in root.iterfind("devices/disk")}
    assert sorted(disks) == ["vda", "vdb"]
    assert disks["vdb"].find("backingStore/source").get("file") == str(folder / "tinyos.qcow2")
    assert check_domain(root, sandbox.root, image_dir=folder) == []


@pytest.mark.guest
def test_a_checkpointed_guest_restores_with_its_overlay_on_another_node_and_counts_on(guest_dir, cleanup, tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    counter = "i=0; while true; do i=$((i+1)); echo count=$i; sleep 0.2; done"
    guest_builder().write_job_disk(image_dir / "counter.raw", counter)
    spec = add_image(guest_spec(), "counter")
    sandbox = make_sandbox(guest_dir, "", job_id="34.0", spec=spec)
    runner = start_runner(sandbox, knobs={"VMSUBMIT_IMAGE_DIR": str(image_dir)})
    cleanup.append((runner, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= 3, BOOT, "the guest to count", runner)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=BOOT)
    assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
    overlay = sandbox / "staged-counter.overlay.qcow2"
    assert overlay.exists()
    before = counts(sandbox)

    other_node = tmp_path / "elsewhere"  # the same image staged at another path, as on another node
    other_node.mkdir()
    (image_dir / "counter.raw").rename(other_node / "counter.raw")
    again = start_runner(sandbox, knobs={"VMSUBMIT_IMAGE_DIR": str(other_node)})
    cleanup.append((again, sandbox))
    wait_for(lambda: len(counts(sandbox)) >= len(before) + 3, BOOT, "the restored guest to count on", again)
    assert counts(sandbox)[len(before)] == before[-1] + 1
    again.send_signal(signal.SIGINT)
    again.communicate(timeout=BOOT)
