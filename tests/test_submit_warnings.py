"""The printed description submits through plain ``condor_submit`` without a warning, for both targets.

Marked ``pool``: ``condor_submit -dry-run`` needs an HTCondor configuration (it builds the job ad
as a real submit would, contacting nothing); skipped with the reason when there is none.  Inputs:
the examples and a sample of the libvirt corpus that the frontend prints for each target.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pool import pool_reachable

from conftest import REPO, corpus_folder

_WHY_NOT = pool_reachable() or (None if shutil.which("condor_submit") else "condor_submit is not on PATH")
pytestmark = [pytest.mark.pool, pytest.mark.skipif(_WHY_NOT is not None, reason=f"no pool: {_WHY_NOT}")]
SAMPLE = sorted(corpus_folder("libvirt").glob("*.xml"))[::40]  # about 40 files of every source


def condor_submit_warnings(domain: Path, target: str, folder: Path) -> list[str] | None:
    """condor_submit's stderr lines for the description the frontend prints (None when the frontend
    refuses the file: then nothing is printed to submit)."""
    printed = subprocess.run(["condor_libvirt_submit", str(domain), "--dry-run", "--target", target,
                              "--hypervisor", "kvm", "--output-dir", str(folder)],
                             capture_output=True, text=True, timeout=120)
    if printed.returncode != 0:
        return None
    checked = subprocess.run(["condor_submit", "-dry-run", "-", "-"], input=printed.stdout, capture_output=True,
                             text=True, timeout=120, cwd=folder)
    assert checked.returncode == 0, checked.stderr
    assert "Requirements=" in checked.stdout  # the job ad condor_submit made
    return checked.stderr.splitlines()


@pytest.mark.parametrize("target", ["runner", "vm-universe"])
def test_no_warnings_from_condor_submit(tmp_path: Path, target: str) -> None:
    checked = 0
    for number, domain in enumerate(sorted((REPO / "examples" / "libvirt").glob("*.xml")) + SAMPLE):
        lines = condor_submit_warnings(domain, target, tmp_path / str(number))
        if lines is None:
            continue
        assert lines == [], f"{domain.name}: {lines}"
        checked += 1
    assert checked >= 10  # the others stop at the frontend (no disk file for vm_disk, refused by the safety rules)
