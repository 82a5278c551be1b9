"""``--local``: the same runner on this machine, console on the terminal, Ctrl-C cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from guest import guest_builder, processes_mentioning, wait_for

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/usr/sbin/libvirtd").exists():
        pytest.skip("libvirtd is not installed")
    folder = tmp_path_factory.mktemp("example")
    builder = guest_builder()
    builder.build_guest(folder)
    (folder / "domain.xml").write_text(builder.domain_xml("local-example"))
    return folder


def frontend(example: Path, script: str, condor_config: Path | str = os.devnull) -> subprocess.Popen:
    """``--local`` on the example, reading ``condor_config`` (by default none, as on a host without HTCondor)."""
    guest_builder().write_job_disk(example / "job.img", script)
    return subprocess.Popen([sys.executable, "-c", "from condor_vmsubmit.cli.libvirt_submit import main; main()",
                             str(example / "domain.xml"), "--local"], cwd=example,  # where a last screen comes back
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "CONDOR_CONFIG": str(condor_config)})


def local_sandboxes() -> set[str]:
    return {p.name for p in Path("/tmp").glob("cvm-local-*")}


def test_local_run_streams_the_console_and_passes_the_exit_status(example):
    before = local_sandboxes()
    process = frontend(example, "echo streamed to the terminal; exit 6")
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 6, output
    assert "streamed to the terminal" in output
    assert "guest exited with status 6" in output
    assert local_sandboxes() == before


def test_local_run_applies_this_machines_policy(example, tmp_path):
    config = tmp_path / "condor_config"
    config.write_text("VMSUBMIT_MAX_MEMORY_MB = 64\n")  # the example guest has 128 MiB
    process = frontend(example, "exit 0", condor_config=config)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 110, output
    assert "exceeds the admin's limit of 64 MiB (VMSUBMIT_MAX_MEMORY_MB)" in " ".join(output.split())


def test_ctrl_c_destroys_the_guest_and_removes_the_sandbox(example):
    before = local_sandboxes()
    process = frontend(example, "while true; do echo tick; sleep 0.2; done")
    lines: list[str] = []
    wait_for(lambda: lines.append(process.stdout.readline()) or "tick" in lines[-1], 180, "the guest's console")
    new = local_sandboxes() - before
    assert len(new) == 1
    sandbox = f"/tmp/{new.pop()}"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert local_sandboxes() == before
    wait_for(lambda: not processes_mentioning(sandbox), 30, "the guest's processes to end")
