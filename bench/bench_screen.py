#!/usr/bin/env python3
"""The guest's screen: what one 1024x768 frame costs, against ``virsh screenshot``, same guest, same run.

The guest (the test guest on the generic Debian kernel, whose VESA framebuffer console ``vga=0x318``
sets to 1024x768) runs under the runner in its per-job libvirt session.  Per frame:

* pause: QEMU's ``screendump`` of the frame on its monitor (``virsh qemu-monitor-command``'s round
  trip, minus that of a no-op command): the time QEMU holds its big lock to copy the frame out, an
  upper bound of what the guest stands still;
* grab: the runner's :func:`condor_vmsubmit.runner.screen.libvirt_grab` (libvirt's screenshot API,
  PPM streamed back);
* png: Pillow encoding that PPM into a PNG, in the runner's process (the guest runs on meanwhile);
* virsh: ``virsh screenshot`` of the same domain into a file (a process, a connection, the same API).

Prints medians and the ratio (grab + png) / virsh.

    python3 bench/bench_screen.py [--frames 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from condor_vmsubmit.control.locate import find_runner  # noqa: E402
from condor_vmsubmit.runner.screen import libvirt_grab, write_png  # noqa: E402
from condor_vmsubmit.spec import KernelBoot  # noqa: E402

from guest import counts, guest_builder, guest_spec, make_sandbox, start_runner, stop_and_clean  # noqa: E402

JOB = "i=0; while true; do i=$((i+1)); echo count=$i; echo frame $i > /dev/tty0; sleep 0.1; done"
CMDLINE = "vga=0x318 console=tty0 console=ttyS0 panic=-1 quiet"
TIMEOUT = 180.0


def monitor(uri: str, name: str, command: dict) -> float:
    """Seconds one QMP command takes through ``virsh qemu-monitor-command`` (its process included)."""
    start = time.perf_counter()
    subprocess.run(["virsh", "-c", uri, "qemu-monitor-command", name, json.dumps(command)], check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    import libvirt

    with tempfile.TemporaryDirectory(prefix="bench-screen-") as folder:
        guest_builder().build_guest(folder, shares=True)  # the generic kernel: it has the VESA framebuffer
        spec = guest_spec()
        boot = KernelBoot(spec.kernel_boot.kernel, spec.kernel_boot.initrd, CMDLINE)
        spec = dataclasses.replace(spec, kernel_boot=boot)
        sandbox = make_sandbox(Path(folder), JOB, job_id="900.0", spec=spec)
        runner = start_runner(sandbox)
        try:
            deadline = time.monotonic() + TIMEOUT
            while len(counts(sandbox)) < 5:
                if time.monotonic() > deadline or runner.poll() is not None:
                    raise SystemExit("the guest did not start counting")
                time.sleep(0.2)
            uri = find_runner(sandbox).session_uri
            libvirt.registerErrorHandler(lambda _c, _e: None, None)
            connection = libvirt.open(uri)
            domain = connection.listAllDomains()[0]
            grab = libvirt_grab(connection, domain)
            png = sandbox / "frame.png"
            size = write_png(grab(), png)
            dump = {"execute": "screendump", "arguments": {"filename": str(sandbox / "dump.ppm")}}
            pause, grabs, encodes, virsh = [], [], [], []
            for _ in range(args.frames):
                noop = monitor(uri, domain.name(), {"execute": "query-status"})
                pause.append(monitor(uri, domain.name(), dump) - noop)
                start = time.perf_counter()
                image = grab()
                grabs.append(time.perf_counter() - start)
                start = time.perf_counter()
                write_png(image, png)
                encodes.append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run(["virsh", "-c", uri, "screenshot", domain.name(), str(sandbox / "virsh.ppm")],
                               check=True, capture_output=True)
                virsh.append(time.perf_counter() - start)
            connection.close()
            runner.send_signal(signal.SIGINT)
            runner.communicate(timeout=60)
        finally:
            stop_and_clean(runner, sandbox)
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    print(f"frame {size[0]}x{size[1]}, {args.frames} frames, medians:")
    print(f"  guest pause (QEMU screendump) {ms(pause):7.2f} ms  (max {max(pause) * 1000:.2f})")
    print(f"  grab (libvirt API, in-process) {ms(grabs):6.2f} ms")
    print(f"  png (Pillow, off the guest)   {ms(encodes):7.2f} ms")
    print(f"  virsh screenshot              {ms(virsh):7.2f} ms")
    print(f"  ratio (grab + png) / virsh     {(ms(grabs) + ms(encodes)) / ms(virsh):6.2f}")


if __name__ == "__main__":
    main()
