"""``--policy`` on every frontend: the execute side's policy verdict before anything is submitted."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import corpus_folder

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "examples" / "policy"
WEB = REPO / "examples" / "libvirt" / "webserver.xml"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_a_rejecting_stylesheet_stops_the_submit_with_its_message(tmp_path):
    done = run("condor_libvirt_submit", str(WEB), "--output-dir", str(tmp_path / "job"),
               "--policy", str(POLICIES / "refuse-removable.xsl"), cwd=tmp_path)
    assert done.returncode == 5
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == [f"condor_libvirt_submit: error: {WEB}: admin policy rejects the VM: "
                     "cdrom drive sda is not allowed on this pool (refuse-removable.xsl)"]
    assert not (tmp_path / "job").exists(), "a rejected VM left files behind"


def test_a_modifying_stylesheet_shows_the_change_and_the_dry_run_goes_on(tmp_path):
    big = tmp_path / "big.xml"
    big.write_text(WEB.read_text().replace("<memory unit='GiB'>4</memory>", "<memory unit='GiB'>16</memory>"))
    assert "16</memory>" in big.read_text()
    done = run("condor_libvirt_submit", str(big), "--dry-run", "--policy", str(POLICIES / "cap-memory.xsl"),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "condor_libvirt_submit: policy: modified: memory 16 GiB -> 4 GiB" in done.stderr
    assert "universe = vanilla" in done.stdout


def test_the_vmdk_and_ovf_frontends_take_the_same_policies(tmp_path):
    vmdk = corpus_folder("vmdk") / "cot__blank.vmdk"
    done = run("condor_vmdk_submit", str(vmdk), "--memory", "8GiB", "--dry-run",
               "--policy", str(POLICIES / "cap-memory.xsl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "condor_vmdk_submit: policy: modified: memory 8 GiB -> 4 GiB" in done.stderr

    ovf = corpus_folder("ovf") / "govmomi__ttylinux-pc_i486-16.1" / "ttylinux-pc_i486-16.1.ovf"
    done = run("condor_ovf_submit", str(ovf), "--dry-run", "--policy", str(POLICIES / "link-down.xsl"),
               cwd=tmp_path)
    assert "condor_ovf_submit: policy: modified: interface 1 link state up -> down" in done.stderr
    # then the safety rules read its disk, cut short in the corpus (qemu-img: "Invalid footer"), as the runner would
    assert done.returncode == 9, done.stderr
    assert ("condor_ovf_submit: refused: /domain/devices/disk: image ttylinux-pc_i486-16.1-disk1.vmdk: "
            "invalid streamOptimized footer") in done.stderr


def test_an_accepting_policy_says_so(tmp_path):
    done = run("condor_libvirt_submit", str(REPO / "examples" / "libvirt" / "kernel-boot.xml"), "--dry-run",
               "--policy", str(POLICIES / "refuse-removable.xsl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "condor_libvirt_submit: policy: accepted" in done.stderr


def test_a_missing_policy_file_is_a_usage_error(tmp_path):
    done = run("condor_libvirt_submit", str(WEB), "--dry-run", "--policy", str(tmp_path / "missing.xsl"),
               cwd=tmp_path)
    assert done.returncode == 2
    assert "does not exist" in done.stderr
