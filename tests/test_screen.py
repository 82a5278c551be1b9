"""The guest's screen on real guests: ``condor_vm_control screenshot``, the last screen of a crashed
guest, and ``--capture-screen`` frames and video.  The test guest writes to its VGA console
(``console=tty0``, and lines the job echoes to ``/dev/tty0``), so its screen shows text."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from PIL import Image

from condor_vmsubmit import jobcontract
from condor_vmsubmit.checks.safety import check_domain
from condor_vmsubmit.control.locate import find_runner
from condor_vmsubmit.discover.ad import Observations, build_ad
from condor_vmsubmit.domain.render import render_spec, replay_domain
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.runner.screen import (
    FRAMES_INDEX,
    LAST_SCREEN_FILE,
    VIDEO_FILE,
    ScreenError,
    ScreenWatcher,
    read_index,
)
from condor_vmsubmit.translate import TranslateOptions, translate

from guest import counts, guest_spec, make_sandbox, qemu_of, start_runner, stop_and_clean, wait_for

BOOT = 120  # seconds a TCG boot may take on a busy machine (a timeout, not a measurement)
TEXT_MODE = (720, 400)  # the VGA text console: 80x25 cells of 9x16 pixels
ON_SCREEN = "i=0; while true; do i=$((i+1)); echo count=$i; echo screen line $i > /dev/tty0; sleep 0.5; done"


def control(sandbox: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "condor_vmsubmit.cli.control", "--sandbox", str(sandbox), *args],
                          check=False, capture_output=True, text=True, timeout=120)


def assert_real_screen(path: Path, size: tuple[int, int] = TEXT_MODE) -> None:
    """A PNG of ``size`` whose pixels are not all one colour."""
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == size
        assert picture.getcolors(maxcolors=1) is None, f"{path} is one colour"  # None: more than one


def with_capture(sandbox: Path, seconds: float) -> None:
    with (sandbox / "job.ad").open("a") as ad:
        ad.write(f"{jobcontract.CAPTURE_SCREEN_ATTR} = {seconds:g}\n")


@pytest.mark.guest
def test_a_screenshot_of_a_running_guest(guest_dir):
    sandbox = make_sandbox(guest_dir, ON_SCREEN, job_id="70.0")
    runner = start_runner(sandbox)
    try:
        wait_for(lambda: len(counts(sandbox)) >= 2, BOOT, "the guest to write to its screen", runner)
        done = control(sandbox, "screenshot", "-o", str(sandbox / "now.png"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{sandbox / 'now.png'} (720x400)"
        assert_real_screen(sandbox / "now.png")
        default = control(sandbox, "screenshot")
        assert default.returncode == 0, default.stderr
        assert_real_screen(Path(default.stdout.split(" (")[0]))
        assert Path(default.stdout).parent == sandbox / jobcontract.SCREEN_DIR
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=60)
    finally:
        stop_and_clean(runner, sandbox)


@pytest.mark.guest
def test_a_crashed_guest_leaves_its_last_screen_named_in_the_hold_reason(guest_dir):
    sandbox = make_sandbox(guest_dir, ON_SCREEN, job_id="71.0")
    runner = start_runner(sandbox)
    try:
        wait_for(lambda: len(counts(sandbox)) >= 14, BOOT, "the guest to write to its screen", runner)  # > 5 s
        for pid in qemu_of("71.0"):
            os.kill(pid, signal.SIGKILL)
        _, stderr = runner.communicate(timeout=60)
        assert runner.returncode == jobcontract.EXIT_GUEST_CRASHED
        assert f"is in {jobcontract.SCREEN_DIR}/{LAST_SCREEN_FILE}" in stderr and "emulator failed" in stderr
        assert "(720x400, " in stderr and "s before it ended)" in stderr
        assert_real_screen(sandbox / jobcontract.SCREEN_DIR / LAST_SCREEN_FILE)
    finally:
        stop_and_clean(runner, sandbox)


@pytest.mark.guest
def test_capture_of_a_20_second_run_gives_frames_and_a_video(guest_dir):
    job = "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo screen line $i > /dev/tty0; sleep 1; done; exit 0"
    sandbox = make_sandbox(guest_dir, job, job_id="72.0")
    with_capture(sandbox, 1)
    runner = start_runner(sandbox)
    try:
        _, stderr = runner.communicate(timeout=BOOT + 60)
        assert runner.returncode == 0, stderr
        folder = sandbox / jobcontract.SCREEN_DIR
        frames = read_index((folder / FRAMES_INDEX).read_text())
        assert len(frames) >= 15, stderr  # one a second, the same screen kept as one frame
        assert all(frame.seconds > 0 for frame in frames)
        assert sum(frame.seconds for frame in frames) >= 20
        assert_real_screen(folder / frames[-1].name)
        assert not (folder / LAST_SCREEN_FILE).exists(), "a guest that exits by itself leaves no last screen"
        if shutil.which("ffprobe") is None:
            pytest.skip("ffmpeg is not installed: frames only (scripts/setup.sh installs it)")
        assert f"the video {jobcontract.SCREEN_DIR}/{VIDEO_FILE} (VP8, WebM)" in stderr
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                                "-of", "json", str(folder / VIDEO_FILE)], capture_output=True, text=True, check=True)
        found = json.loads(probe.stdout)
        assert found["streams"][0]["codec_name"] == "vp8"
        assert float(found["format"]["duration"]) >= 20
    finally:
        stop_and_clean(runner, sandbox)


@pytest.mark.guest
def test_a_qemu_direct_guest_screenshot_through_its_script(guest_dir, script_dir):
    """The job accepts kvm or qemu-direct; the node runs no kvm but has the script: the runner takes
    qemu-direct (and leaves no libvirt session), and condor_vm_control goes through the script."""
    spec = dataclasses.replace(guest_spec(), hypervisor="kvm,qemu-direct", nics=())
    sandbox = make_sandbox(guest_dir, ON_SCREEN, job_id="73.0", spec=spec)
    (sandbox / "machine.ad").write_text('Memory = 2048\nCpus = 2\nVM_HYPERVISORS = { "qemu", "qemu-direct" }\n')
    runner = start_runner(sandbox, knobs={"VMSUBMIT_SCRIPT_DIR": str(script_dir)})
    try:
        wait_for(lambda: len(counts(sandbox)) >= 2, BOOT, "the guest to write to its screen", runner)
        assert (sandbox / "qmp.sock").exists() and find_runner(sandbox).session_uri is None
        assert control(sandbox, "--script-dir", str(script_dir), "status").stdout.startswith("running (script")
        done = control(sandbox, "--script-dir", str(script_dir), "screenshot", "-o", str(sandbox / "qd.png"))
        assert done.returncode == 0, done.stderr
        assert_real_screen(sandbox / "qd.png")
        assert not list((sandbox / jobcontract.SCREEN_DIR).glob(".screenshot-*")), "the script's file is left"
    finally:
        stop_and_clean(runner, sandbox)


def test_every_guest_gets_a_display_that_listens_nowhere(guest_dir, tmp_path):
    sandbox = Sandbox(tmp_path)
    root = render_spec(guest_spec(), sandbox, domain_type="qemu", job_id="x#1.0#1")
    assert [listen.get("type") for listen in root.findall("devices/graphics/listen")] == ["none"]
    assert root.find("devices/video/model").get("type") == "vga"
    assert not check_domain(root, tmp_path)
    user = etree.fromstring("<domain type='kvm'><name>u</name><devices><graphics type='vnc' listen='127.0.0.1'/>"
                            "</devices></domain>")
    replayed, notes = replay_domain(user, sandbox, domain_type="qemu", job_id="x#1.0#1")
    assert len(replayed.findall("devices/graphics")) == 1 and replayed.find("devices/video") is None
    assert not any("<graphics>" in note for note in notes)
    bare, notes = replay_domain(etree.fromstring("<domain type='kvm'><name>u</name></domain>"), sandbox,
                                domain_type="qemu", job_id="x#1.0#1")
    assert bare.find("devices/graphics/listen").get("type") == "none"
    assert any(note.startswith("<graphics>: added a VGA display that listens nowhere") for note in notes)


def test_capture_screen_in_the_submit_description():
    spec = dataclasses.replace(guest_spec(), source_path="/home/user/vm/domain.xml")
    commands = dict(translate(spec, TranslateOptions(capture_screen=2.0)).commands)
    assert commands[f"MY.{jobcontract.CAPTURE_SCREEN_ATTR}"] == "2"
    assert jobcontract.SCREEN_DIR in commands["transfer_checkpoint_files"].split(", ")
    plain = dict(translate(spec).commands)
    assert f"MY.{jobcontract.CAPTURE_SCREEN_ATTR}" not in plain
    # the screen folder always travels: it holds the last screen of a guest that was held or vacated
    assert jobcontract.SCREEN_DIR in plain["transfer_checkpoint_files"].split(", ")
    assert jobcontract.SCREEN_DIR in plain["transfer_output_files"].split(", ")


def test_discovery_advertises_whether_a_node_makes_videos():
    assert build_ad(Observations(None, screen_video=True))["VM_SCREEN_VIDEO"] == "true"
    assert build_ad(Observations(None))["VM_SCREEN_VIDEO"] == "false"


@pytest.mark.guest
@pytest.mark.parametrize(("wanted", "code"), [("kvm,qemu", 5), ("xen,vbox", jobcontract.EXIT_MISMATCH)])
def test_the_runner_takes_the_first_hypervisor_of_a_list_that_works_here(guest_dir, wanted, code):
    sandbox = make_sandbox(guest_dir, "exit 5", job_id=f"74.{code}",
                           spec=dataclasses.replace(guest_spec(), hypervisor=wanted))
    runner = start_runner(sandbox)
    try:
        _, stderr = runner.communicate(timeout=BOOT)
        assert runner.returncode == code, stderr
        if code == jobcontract.EXIT_MISMATCH:
            assert "hypervisor 'xen' is not usable on this host (usable: qemu)" in stderr
    finally:
        stop_and_clean(runner, sandbox)


def pictures(sizes: list[tuple[int, int]]):
    """A grab that shows a new screen each time (a colour per call, the sizes in turn), as QEMU's PPM."""
    calls = []

    def grab() -> bytes:
        calls.append(None)
        out = io.BytesIO()
        picture = Image.new("RGB", sizes[len(calls) % len(sizes)], (len(calls) * 7 % 256, 40, 200))
        picture.putpixel((0, 0), (255, 255, 255))
        picture.save(out, "PPM")
        return out.getvalue()

    return grab, calls


def test_a_capture_stays_bounded_covers_the_run_and_goes_on_after_a_checkpoint(tmp_path):
    grab, calls = pictures([(640, 480), (720, 400)])
    with ScreenWatcher(grab, tmp_path, 0.01, lambda: False, max_frames=8) as watcher:
        wait_for(lambda: len(calls) >= 25, 60, "25 frames")
    said = watcher.finish(final=False)
    frames = read_index((tmp_path / FRAMES_INDEX).read_text())
    assert 4 <= len(frames) <= 9 and watcher.interval >= 0.08, (len(frames), watcher.interval)
    assert sorted(path.name for path in tmp_path.glob("frame-*.png")) == [frame.name for frame in frames]
    assert frames[-1].taken - frames[0].taken == pytest.approx(sum(f.seconds for f in frames[:-1]), abs=0.01)
    assert said == f"{len(frames)} frames of the guest's screen in {jobcontract.SCREEN_DIR}/"
    assert not (tmp_path / VIDEO_FILE).exists(), "no video before the job's end"

    taken = len(calls)
    restored = ScreenWatcher(grab, tmp_path, 0.01, lambda: False, max_frames=8)  # after the checkpoint
    with restored:
        wait_for(lambda: len(calls) >= taken + 3, 30, "frames after the restore")
    said = restored.finish(final=True)
    after = read_index((tmp_path / FRAMES_INDEX).read_text())
    assert (after[0].name, after[0].taken) == (frames[0].name, frames[0].taken) and len(after) <= 9, "goes on, bounded"
    assert int(after[-1].name[6:12]) > int(frames[-1].name[6:12])
    if shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not installed")
    assert said.endswith(f"the video {jobcontract.SCREEN_DIR}/{VIDEO_FILE} (VP8, WebM)")
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0",
                            str(tmp_path / VIDEO_FILE)], capture_output=True, text=True, check=True)
    sizes = [Image.open(tmp_path / frame.name).size for frame in after]
    largest = f"{max(w for w, _ in sizes)},{max(h for _, h in sizes)}"
    assert probe.stdout.strip() == largest, "every frame scaled into the largest width and height"


def test_a_guest_without_a_screen_leaves_none():
    def grab() -> bytes:
        raise ScreenError("no screens to take screenshot from")

    watcher = ScreenWatcher(grab, Path("/nonexistent/vm-screen"), None, lambda: False)
    with watcher:
        pass
    assert watcher.last_screen() is None and watcher.finish(final=True) is None


@pytest.mark.guest
def test_a_guest_held_while_it_runs_leaves_the_screen_it_shows_then(guest_dir):
    """SIGTERM's checkpoint fails (its folder now leads into /sys, where nobody can write) and the
    runner holds the job, the guest still running; its last screen is taken at that moment."""
    sandbox = make_sandbox(guest_dir, ON_SCREEN, job_id="75.0")
    runner = start_runner(sandbox)
    try:
        wait_for(lambda: len(counts(sandbox)) >= 2, BOOT, "the guest to write to its screen", runner)
        (sandbox / jobcontract.CHECKPOINT_DIR).rmdir()
        (sandbox / jobcontract.CHECKPOINT_DIR).symlink_to("/sys")
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
        assert runner.returncode == jobcontract.EXIT_CHECKPOINT_FAILED, stderr
        assert "could not save the guest" in stderr
        assert f"(720x400, when it ended) is in {jobcontract.SCREEN_DIR}/{LAST_SCREEN_FILE}" in stderr
        assert_real_screen(sandbox / jobcontract.SCREEN_DIR / LAST_SCREEN_FILE)
    finally:
        stop_and_clean(runner, sandbox)


@pytest.mark.guest
def test_a_vacated_guest_leaves_its_last_screen_named_in_the_job_log(guest_dir):
    sandbox = make_sandbox(guest_dir, ON_SCREEN, job_id="76.0")
    runner = start_runner(sandbox)
    try:
        wait_for(lambda: len(counts(sandbox)) >= 14, BOOT, "the guest to write to its screen", runner)  # > 5 s
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
        assert runner.returncode == jobcontract.EXIT_CHECKPOINTED, stderr
        assert "condor_vm_runner: the guest's last screen (720x400, " in stderr
        assert_real_screen(sandbox / jobcontract.SCREEN_DIR / LAST_SCREEN_FILE)
    finally:
        stop_and_clean(runner, sandbox)
