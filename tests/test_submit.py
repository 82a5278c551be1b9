"""Real submissions that fail: one clear line and exit code 1, never a traceback.

HTCondor reads its configuration once per process, so each case runs
``condor_libvirt_submit`` in a child process with ``CONDOR_CONFIG`` pointing at a
configuration in tmp whose schedd or collector listens on a closed localhost port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract

PROGRAM = shutil.which("condor_libvirt_submit") or pytest.skip(
    "condor_libvirt_submit is not installed (pip install -e .)", allow_module_level=True)

DOMAIN = """<domain type='qemu'><name>submit-test</name><memory unit='MiB'>128</memory>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
<source file='disk.raw'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


def closed_port() -> int:
    """A localhost port nobody listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def condor_config(tmp_path: Path) -> Path:
    """A configuration naming a local schedd and a collector on closed ports."""
    port = closed_port()
    address = tmp_path / "schedd_address"
    address.write_text(f"<127.0.0.1:{port}>\n$CondorVersion: 25.0.0 2025-01-01 $\n"
                       "$CondorPlatform: X86_64-Debian_12 $\n")
    config = tmp_path / "condor_config"
    config.write_text(f"LOCAL_DIR = {tmp_path}\nLOG = {tmp_path}\n"
                      f"COLLECTOR_HOST = 127.0.0.1:{closed_port()}\n"
                      f"SCHEDD_ADDRESS_FILE = {address}\nSCHEDD_SUPER_ADDRESS_FILE = {address}\n"
                      "VMSUBMIT_RUNNER = /opt/vmsubmit/bin/condor_vm_runner\n")
    return config


@pytest.fixture
def domain(tmp_path: Path) -> Path:
    (tmp_path / "disk.raw").write_bytes(b"\0" * 4096)
    path = tmp_path / "dom.xml"
    path.write_text(DOMAIN)
    return path


def run(args: list[str], config: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONDOR_CONFIG=str(config))
    env.pop("_CONDOR_COLLECTOR_HOST", None)
    return subprocess.run([PROGRAM] + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_unreachable_local_schedd_is_one_line_exit_1(condor_config: Path, domain: Path, tmp_path: Path) -> None:
    result = run([str(domain), "--output-dir", str(tmp_path / "job")], condor_config, tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("condor_libvirt_submit: error: submission to the schedd failed: ")
    assert "Failed to connect" in errors[0] and "127.0.0.1" in errors[0]
    assert result.stdout == ""
    # the spec file is written before the schedd is contacted
    assert (tmp_path / "job" / jobcontract.SPEC_FILE).is_file()


def test_unreachable_pool_is_one_line_exit_1(condor_config: Path, domain: Path, tmp_path: Path) -> None:
    port = closed_port()
    result = run([str(domain), "-pool", f"127.0.0.1:{port}", "-name", "schedd@nowhere"],
                 condor_config, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith(f"error: cannot reach schedd 'schedd@nowhere' in pool 127.0.0.1:{port}: "
                              "Failed communication with collector.")
    assert "Traceback" not in result.stderr


def test_missing_disk_fails_before_contacting_anything(condor_config: Path, domain: Path, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").unlink()
    result = run([str(domain)], condor_config, tmp_path)
    assert result.returncode == 3
    assert f"{tmp_path / 'disk.raw'}: input file not found" in result.stderr


def test_runner_path_comes_from_the_knob(condor_config: Path, tmp_path: Path) -> None:
    env = dict(os.environ, CONDOR_CONFIG=str(condor_config))
    code = "from condor_vmsubmit.submit import configured_runner; print(configured_runner())"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "/opt/vmsubmit/bin/condor_vm_runner"
    condor_config.write_text(condor_config.read_text().replace("VMSUBMIT_RUNNER", "# VMSUBMIT_RUNNER"))
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == jobcontract.DEFAULT_RUNNER
