#!/usr/bin/env python3
"""Inspecting big VMDKs: bytes read and time, against `qemu-img info` on the same files.

Makes a 2 TiB monolithicSparse VMDK (`qemu-img create`) and a multi-GB streamOptimized VMDK
(`qemu-img convert` from a sparse raw with data scattered over it), then for each:

* bytes our reader reads, counted twice: by the reader itself and by the kernel
  (``rchar`` in /proc/self/io, every byte that read()/pread() returned);
* median wall time of our reader (in process, as the frontends and the runner call it) and of
  ``qemu-img info --output=json`` (a process, as people run it), and of our whole
  ``condor_vmsubmit inspect --json`` command for completeness.

Usage: python3 bench/bench_vmdk.py [--runs N] [--stream-size GiB]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from condor_vmsubmit.images.diskimage import read_image
from condor_vmsubmit.images.imageio import MAX_HEADER_BYTES


def kernel_bytes_read() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def kernel_count(action) -> int:
    """Bytes the kernel handed this process during ``action``, less what reading the counter costs."""
    baseline = -kernel_bytes_read() + kernel_bytes_read()
    before = kernel_bytes_read()
    action()
    return kernel_bytes_read() - before - baseline


def median_seconds(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_images(folder: Path, stream_gib: int) -> dict[str, Path]:
    sparse = folder / "sparse-2T.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", sparse, "2T"],
                   check=True)
    raw = folder / "source.raw"
    with open(raw, "wb") as out:
        out.truncate(stream_gib * 1024**3)
        for step in range(64):   # 64 x 1 MiB of incompressible data spread over the disk
            out.seek(step * (stream_gib * 1024**3 // 64))
            out.write(os.urandom(1024**2))
    stream = folder / f"stream-{stream_gib}G.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    raw, stream], check=True)
    raw.unlink()
    return {"2 TiB monolithicSparse": sparse, f"{stream_gib} GiB streamOptimized": stream}


def bench(label: str, path: Path, runs: int) -> bool:
    info = read_image(path)
    kernel = kernel_count(lambda: read_image(path))
    ours = median_seconds(lambda: read_image(path), runs)
    qemu = median_seconds(lambda: subprocess.run(["qemu-img", "info", "--output=json", path],
                                                 check=True, capture_output=True), runs)
    cli = median_seconds(lambda: subprocess.run(["condor_vmsubmit", "inspect", "--json", path],
                                                check=True, capture_output=True), max(3, runs // 4))
    size = path.stat().st_size
    print(f"{label}: virtual {info.virtual_size} bytes, file {size} bytes ({info.create_type})")
    print(f"  bytes read: {info.bytes_read} (reader's count), {kernel} (kernel rchar); "
          f"limit {MAX_HEADER_BYTES}: {'ok' if max(kernel, info.bytes_read) <= MAX_HEADER_BYTES else 'OVER'}")
    print(f"  median: read_image {ours * 1e3:.3f} ms, qemu-img info {qemu * 1e3:.3f} ms, "
          f"ratio {ours / qemu:.3f} (target < 1)")
    print(f"  whole command `condor_vmsubmit inspect --json`: {cli * 1e3:.1f} ms "
          f"(ratio {cli / qemu:.2f}; Python start-up and imports dominate)")
    return max(kernel, info.bytes_read) <= MAX_HEADER_BYTES and ours < qemu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--stream-size", type=int, default=4, metavar="GiB")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vmdk-") as folder:
        images = make_images(Path(folder), options.stream_size)
        results = [bench(label, path, options.runs) for label, path in images.items()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
