"""How long does ``condor_vm_discover`` take, warm and with a hung libvirtd?

Starts a private session libvirtd (as the tests do), warms it with one long run, then
measures alternately, in the same run: discovery with warm caches; the same questions
asked by hand (``virsh capabilities`` plus ``virsh domcapabilities``); ``python -c "import
lxml.etree, click"`` (the floor any of our commands pays); and discovery against a socket
that never answers.  Prints medians, the ratio of warm discovery to the virsh pair, and
the hung case against the 2 s budget a startd cron job has.

    python3 bench/bench_discover.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from libvirt_session import installed_runner, session_libvirtd  # noqa: E402

BUDGET = 2.0
DISCOVER = [sys.executable, "-c", "from condor_vmsubmit.cli.discover import main; main()"]


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    os.environ["_CONDOR_VMSUBMIT_RUNNER"] = installed_runner()  # as on a node with the runner installed
    with tempfile.TemporaryDirectory(prefix="vmdisc-bench-") as folder, session_libvirtd() as uri:
        state = ["--state-dir", str(Path(folder) / "state")]
        hung_path = Path(folder) / "hung.sock"
        hung = socket.socket(socket.AF_UNIX)
        hung.bind(str(hung_path))
        hung.listen(64)
        subprocess.run([*DISCOVER, "--uri", uri, *state, "--timeout", "90"], check=True, capture_output=True)
        virsh = f"virsh -c '{uri}'"
        by_hand = f"{virsh} capabilities >/dev/null && {virsh} domcapabilities --virttype qemu"
        commands = {
            "discover (warm)": [*DISCOVER, "--uri", uri, *state],
            "virsh capabilities + domcapabilities": ["sh", "-c", by_hand],
            "python -c 'import lxml.etree, click'": [sys.executable, "-c", "import lxml.etree, click"],
            "discover (hung libvirtd)": [*DISCOVER, "--uri", f"qemu+unix:///session?socket={hung_path}",
                                         *state],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(wall_time(command))
        hung.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:40s} {value * 1000:8.0f} ms (median of {args.runs})")
    ratio = medians["discover (warm)"] / medians["virsh capabilities + domcapabilities"]
    print(f"warm discovery / virsh pair: {ratio:.2f}")
    print(f"hung libvirtd: {medians['discover (hung libvirtd)']:.2f} s of the {BUDGET:.0f} s budget "
          f"(max {max(times['discover (hung libvirtd)']):.2f} s)")


if __name__ == "__main__":
    main()
