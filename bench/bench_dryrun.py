"""How fast is ``condor_libvirt_submit --dry-run``?

Prints the median wall time of a dry run on an example domain against
``python -c "import lxml.etree, click"`` (the floor any frontend pays), measured
alternately in the same run, and their ratio (target: at most 2.0).

    python3 bench/bench_dryrun.py [--runs 21] [DOMAIN.xml]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "libvirt" / "webserver.xml"
TARGET_RATIO = 2.0


def frontend_command() -> list[str]:
    """The installed entry point next to this interpreter (not a shell shim), else the same call."""
    script = Path(sys.executable).parent / "condor_libvirt_submit"
    if script.is_file() and script.read_bytes()[:64].startswith(b"#!") and b"python" in script.read_bytes()[:64]:
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from condor_vmsubmit.cli.libvirt_submit import main; main()"]


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain", nargs="?", type=Path, default=EXAMPLE)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    dry_run = frontend_command() + ["--dry-run", str(args.domain)]
    baseline = [sys.executable, "-c", "import lxml.etree, click"]
    wall_time(dry_run), wall_time(baseline)  # warm the page cache
    ours, floor = [], []
    for _ in range(args.runs):
        ours.append(wall_time(dry_run))
        floor.append(wall_time(baseline))
    ours_median, floor_median = statistics.median(ours), statistics.median(floor)
    ratio = ours_median / floor_median
    print(f"domain: {args.domain}  runs: {args.runs}")
    print(f"condor_libvirt_submit --dry-run     median {ours_median * 1000:7.1f} ms")
    print(f"python -c 'import lxml.etree, click' median {floor_median * 1000:7.1f} ms")
    print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO}): {'ok' if ratio <= TARGET_RATIO else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
