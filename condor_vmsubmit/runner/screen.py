"""The guest's screen: a picture of it now, pictures for the whole run, and the last one when a
guest ends in a way the user did not ask for (docs/console-and-ssh.md).

QEMU dumps its display as a PPM (libvirt's screenshot API; ``screendump`` on QEMU's monitor for
``qemu-direct``): the guest stands still only while QEMU copies the frame out.  Encoding to PNG
happens here, outside QEMU, through Pillow, imported only when a picture is written.

Everything lands in the sandbox's ``vm-screen/`` folder, which HTCondor transfers back with the
output and, with ``--capture-screen``, across checkpoints:

* ``last-screen.png``: the last screen of a guest that crashed, was held or was stopped by the pool;
* ``frame-NNNNNN.png`` and ``frames.txt`` (ffmpeg's concat list: each frame and how long it showed):
  the capture, at most :data:`MAX_FRAMES` frames and :data:`MAX_CAPTURE_BYTES` bytes: past either,
  every other frame goes and the interval doubles, so the frames still cover the whole run;
* ``vm-screen.webm``: the capture as a video (VP8 in WebM, as ``VBoxHeadless --capture`` writes),
  made at the job's end where ffmpeg is installed.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import jobcontract

LAST_SCREEN_FILE = "last-screen.png"
FRAMES_INDEX = "frames.txt"
VIDEO_FILE = "vm-screen.webm"
VIDEO_CODEC = "libvpx"       # VP8, in a WebM container
MAX_FRAMES = 1000
MAX_CAPTURE_BYTES = 100 * 2**20
KEEP_SECONDS = 5.0           # without a capture, how often a frame is kept (in memory) for the last screen
VIDEO_SECONDS = 600.0        # at most this long for ffmpeg to make the video

Grab = Callable[[], bytes]   # the guest's display now, as an image file's bytes (PPM or PNG)


class ScreenError(Exception):
    """The display could not be read (no display device, the guest is gone, ...)."""


def libvirt_grab(connection, domain) -> Grab:
    """A :data:`Grab` through libvirt's screenshot API (screen 0 of ``domain``)."""
    import libvirt

    def grab() -> bytes:
        chunks: list[bytes] = []
        try:
            stream = connection.newStream(0)
            domain.screenshot(stream, 0, 0)
            stream.recvAll(lambda _stream, data, found: found.append(data), chunks)
            stream.finish()
        except libvirt.libvirtError as exc:
            raise ScreenError(exc.get_error_message()) from None
        return b"".join(chunks)

    return grab


def script_grab(script: Path, job_ad_file: Path, sandbox: Path, spec_file: Path) -> Grab:
    """A :data:`Grab` through an admin script's ``screenshot`` action (script-managed jobs), which
    writes the picture to a file the runner names in ``VMSUBMIT_SCREENSHOT``."""
    from .script_protocol import SCREENSHOT_ENV, ScriptOutcome, run_action

    def grab() -> bytes:
        folder = sandbox / jobcontract.SCREEN_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f".screenshot-{os.getpid()}-{threading.get_ident()}"
        try:
            result = run_action(script, "screenshot", job_ad_file, sandbox, spec_file, timeout=30,
                                environment={SCREENSHOT_ENV: str(path)})
            if result.outcome == ScriptOutcome.NOT_IMPLEMENTED:
                raise ScreenError(f"{script.name} does not implement 'screenshot'")
            if result.outcome != ScriptOutcome.EXECUTED:
                raise ScreenError(result.reason)
            return path.read_bytes()
        except OSError as exc:
            raise ScreenError(f"{script.name} wrote no picture: {exc.strerror}") from None
        finally:
            path.unlink(missing_ok=True)

    return grab


def write_png(image: bytes, path: Path) -> tuple[int, int]:
    """Write ``image`` (any format Pillow reads) as a PNG at ``path``; its width and height."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(image))
        picture.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ScreenError(f"not a picture of the screen: {exc}") from None
    partial = path.with_name(path.name + ".partial")
    with picture:
        picture.save(partial, "PNG")
    partial.replace(path)
    return picture.size


def can_make_video() -> bool:
    """Whether ffmpeg is installed here (discovery advertises it as ``VM_SCREEN_VIDEO``)."""
    return shutil.which("ffmpeg") is not None


@dataclass
class Frame:
    name: str
    taken: float      # time.time() when it was taken
    seconds: float    # how long it showed


def read_index(text: str) -> list[Frame]:
    """The frames of a concat list written by :func:`index_text`.

    >>> [(f.name, f.seconds) for f in read_index(index_text([Frame("frame-000001.png", 5.0, 2.5)]))]
    [('frame-000001.png', 2.5)]
    """
    frames: list[Frame] = []
    for line in text.splitlines():
        word, _, value = line.partition(" ")
        if word == "file":
            frames.append(Frame(value.strip("'"), 0.0, 0.0))
        elif word == "duration" and frames:
            frames[-1].seconds = float(value)
        elif word == "#taken" and frames:
            frames[-1].taken = float(value)
    return frames[:-1] if frames and not frames[-1].taken else frames  # the repeated last one


def index_text(frames: list[Frame]) -> str:
    """ffmpeg's concat list of ``frames`` (the last one repeated, so that its duration counts)."""
    lines = ["ffconcat version 1.0"]
    for frame in frames:
        lines += [f"file '{frame.name}'", f"#taken {frame.taken:.3f}", f"duration {frame.seconds:.3f}"]
    if frames:
        lines.append(f"file '{frames[-1].name}'")
    return "\n".join(lines) + "\n"


class ScreenWatcher:
    """Takes the guest's screen in a thread of its own while the guest runs.

    With ``capture`` (seconds between frames) every new frame is written to the folder; without,
    one frame every :data:`KEEP_SECONDS` is kept in memory, so that a guest that crashes still
    leaves its last screen.  ``quiet`` says when not to touch the guest (a checkpoint under way).
    A capture an earlier run of the job left in the folder (before a checkpoint) goes on.
    """

    def __init__(self, grab: Grab, folder: Path, capture: float | None, quiet: Callable[[], bool],
                 max_frames: int = MAX_FRAMES, max_bytes: int = MAX_CAPTURE_BYTES):
        self.grab = grab
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.folder = folder
        self.capture = capture
        self.interval = capture or KEEP_SECONDS
        self.quiet = quiet
        self.latest: tuple[bytes, float] | None = None
        self.frames: list[Frame] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="screen", daemon=True)
        if capture:
            folder.mkdir(exist_ok=True)
            index = folder / FRAMES_INDEX
            self.frames = read_index(index.read_text()) if index.exists() else []  # an earlier run's

    def __enter__(self) -> ScreenWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self.done.is_set():
            if not self.quiet():
                try:
                    self._take()
                except ScreenError:
                    pass  # no display, or the guest is ending: the last kept frame stays
            self.done.wait(self.interval)

    def _take(self) -> None:
        image = self.grab()
        now = time.time()
        previous = self.latest
        self.latest = (image, now)
        if not self.capture:
            return
        if self.frames and previous is not None and previous[0] == image:
            self.frames[-1].seconds = now - self.frames[-1].taken  # the same screen, showing longer
        else:
            if self.frames:
                self.frames[-1].seconds = now - self.frames[-1].taken
            number = int(self.frames[-1].name[6:12]) + 1 if self.frames else 1
            name = f"frame-{number:06d}.png"
            write_png(image, self.folder / name)
            self.frames.append(Frame(name, now, self.interval))
            self._bound()
        (self.folder / FRAMES_INDEX).write_text(index_text(self.frames))

    def _bound(self) -> None:
        """Past ``max_frames`` or ``max_bytes``, drop every other frame and take frames half as often."""
        total = sum((self.folder / frame.name).stat().st_size for frame in self.frames)
        if len(self.frames) <= self.max_frames and total <= self.max_bytes:
            return
        kept: list[Frame] = []
        for index, frame in enumerate(self.frames):
            if index % 2 == 1 and index != len(self.frames) - 1:
                kept[-1].seconds += frame.seconds
                (self.folder / frame.name).unlink(missing_ok=True)
            else:
                kept.append(frame)
        self.frames = kept
        self.interval *= 2

    def last_screen(self) -> str | None:
        """Save the guest's last screen as ``last-screen.png`` in the folder: taken now if the
        guest still shows one, else the last frame kept.  What to tell the user, or None."""
        self.stop()
        when = "when it ended"
        try:
            image = self.grab()
        except ScreenError:
            if self.latest is None:
                return None
            image, taken = self.latest
            when = f"{time.time() - taken:.0f} s before it ended"
        self.folder.mkdir(exist_ok=True)
        try:
            width, height = write_png(image, self.folder / LAST_SCREEN_FILE)
        except ScreenError:
            return None
        return (f"the guest's last screen ({width}x{height}, {when}) is in "
                f"{jobcontract.SCREEN_DIR}/{LAST_SCREEN_FILE}")

    def finish(self, final: bool) -> str | None:
        """Stop; close the capture's index and, at the job's ``final`` end, make the video.
        What to tell the user, or None."""
        self.stop()
        if not self.capture or not self.frames:
            return None
        self.frames[-1].seconds = max(time.time() - self.frames[-1].taken, 0.1)
        (self.folder / FRAMES_INDEX).write_text(index_text(self.frames))
        said = f"{len(self.frames)} frames of the guest's screen in {jobcontract.SCREEN_DIR}/"
        if final and can_make_video():
            error = make_video(self.folder)
            said += f", {error}" if error else f" and the video {jobcontract.SCREEN_DIR}/{VIDEO_FILE} (VP8, WebM)"
        return said


def make_video(folder: Path) -> str | None:
    """``vm-screen.webm`` from the frames in ``folder`` (each shown as long as the index says),
    scaled to the largest frame; None, or why there is none."""
    from PIL import Image

    frames = read_index((folder / FRAMES_INDEX).read_text())
    sizes = []
    for frame in frames:
        with Image.open(folder / frame.name) as picture:
            sizes.append(picture.size)
    width = max(w for w, _ in sizes) // 2 * 2
    height = max(h for _, h in sizes) // 2 * 2
    fit = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
           f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,format=yuv420p")
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
               "-i", FRAMES_INDEX, "-vf", fit, "-fps_mode", "vfr", "-c:v", VIDEO_CODEC, "-b:v", "1M",
               "-crf", "10", VIDEO_FILE]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=VIDEO_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no video: {exc}"
    if done.returncode != 0:
        return f"no video: ffmpeg: {(done.stderr.strip().splitlines() or ['failed'])[-1]}"
    return None
