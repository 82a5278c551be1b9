"""Shared fixtures: where the real-world corpus lives, and markers that skip with a reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("VMSUBMIT_CORPUS", REPO.parent / "shared" / "corpus"))


def corpus_folder(name: str) -> Path:
    """``../shared/corpus/<name>``, or skip the test with a reason when it is not there."""
    folder = CORPUS / name
    if not (folder / "EXPECTED.json").exists():
        pytest.skip(f"corpus folder {folder} not found (set VMSUBMIT_CORPUS)")
    return folder


def expected(name: str) -> dict:
    """The corpus folder's EXPECTED.json without its ``_oracle`` entry."""
    data = json.loads((corpus_folder(name) / "EXPECTED.json").read_text())
    data.pop("_oracle", None)
    return data


@pytest.fixture
def script_dir(tmp_path: Path) -> Path:
    """An admin script directory holding qemu-direct, installed as docs/script-managed.md says."""
    folder = tmp_path / "vm-scripts"
    folder.mkdir()
    launcher = folder / "qemu-direct"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom condor_vmsubmit.scripts.qemu_direct import main\n"
                        "sys.exit(main())\n")
    launcher.chmod(0o755)
    return folder


GUEST_TOOLS = ("/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64", "/bin/busybox")


@pytest.fixture(scope="session")
def guest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test guest (kernel + busybox initramfs, examples/guest/), built once per test run."""
    for tool in GUEST_TOOLS:
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed (scripts/test installs it)")
    from guest import guest_builder

    out = tmp_path_factory.mktemp("guest")
    guest_builder().build_guest(out)
    return out


@pytest.fixture
def pool_folder() -> Iterator[tuple[Path, list[int]]]:
    """For pool tests (tests/pool.py): a submit folder the job user can write into, and a list of
    clusters removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="cvp", dir="/tmp"))
    folder.chmod(0o777)  # root's submit writes the job's files as the mapped job user
    clusters: list[int] = []
    yield folder, clusters
    for cluster in clusters:
        subprocess.run(["condor_rm", str(cluster)], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)
