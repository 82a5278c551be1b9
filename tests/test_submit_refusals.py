"""The frontends refuse at submit time what the runner would refuse, on corpus files.

Each refused element is one ``refused:`` line on stderr, then one error line; the exit code is 9
(docs/exit-codes.md); nothing is written (no output folder) and nothing is submitted.  The same
holds for ``--dry-run``, ``--local`` and ``condor_vmsubmit policy-check``.  That the runner finds the
same refusals is tests/test_checks_both_sides.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import corpus_folder

# emulator /usr/libexec/libvirt_lxc, an interface of type direct, two hostdevs
HOSTDEV = "libvirt-9.0.0__lxcconf2xmldata__lxcconf2xml-miscnetwork.xml"
HOSTDEV_REFUSALS = [
    "/domain/devices/emulator (line 19): emulator '/usr/libexec/libvirt_lxc' is not one of the host's QEMU "
    "system emulators; leave <emulator> out",
    "/domain/devices/interface (line 24): interface type 'direct' reaches the host network directly; "
    "use <interface type='user'>",
    "/domain/devices/hostdev[1] (line 29): host devices cannot be passed to a job's guest",
    "/domain/devices/hostdev[2] (line 38): host devices cannot be passed to a job's guest",
]
# qemu:commandline with qemu:env and two qemu:arg
QEMU_COMMANDLINE = "virt-manager__cli__virtxml__virtxml-qemu-commandline-clear.xml"
# a custom emulator, a Xen loader outside the sandbox, a block disk and two PCI hostdevs
XEN_PCI = "libvirt-9.0.0__xlconfigdata__test-fullvirt-pci.xml"


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG"}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def refusals(prog: str, stderr: str) -> list[str]:
    """The refused elements in ``stderr``, which must hold nothing else but the error line after them."""
    lines = stderr.splitlines()
    refused = [line.removeprefix(f"{prog}: refused: ") for line in lines if line.startswith(f"{prog}: refused: ")]
    assert lines[len(lines) - 1].startswith(f"{prog}: error: ") and "safety rules refuse" in lines[-1]
    assert f"refuse {len(refused)} element" in lines[-1] and "nothing was written or submitted" in lines[-1]
    return refused


@pytest.mark.parametrize("mode", [(), ("--dry-run",), ("--dry-run", "--json")])
def test_a_domain_with_hostdevs_and_a_custom_emulator_is_refused_before_anything(tmp_path: Path, mode) -> None:
    done = run("condor_libvirt_submit", corpus_folder("libvirt") / HOSTDEV, *mode, cwd=tmp_path)
    assert done.returncode == 9, done.stderr
    assert refusals("condor_libvirt_submit", done.stderr) == HOSTDEV_REFUSALS
    assert done.stdout == "" and list(tmp_path.iterdir()) == []  # no NAME.vmjob folder, nothing printed


def test_local_refuses_before_staging_or_starting_anything(tmp_path: Path) -> None:
    done = run("condor_libvirt_submit", corpus_folder("libvirt") / QEMU_COMMANDLINE, "--local", cwd=tmp_path)
    assert done.returncode == 9, done.stderr
    assert len(refusals("condor_libvirt_submit", done.stderr)) == 4 and list(tmp_path.iterdir()) == []


def test_policy_check_says_what_the_execute_side_would(tmp_path: Path) -> None:
    done = run("condor_vmsubmit", "policy-check", corpus_folder("libvirt") / HOSTDEV, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (9, "policy: accepted\n")  # the policy accepts; the safety rules do not
    assert refusals("condor_vmsubmit", done.stderr) == HOSTDEV_REFUSALS


def test_the_submit_side_refuses_without_the_runners_code(tmp_path: Path) -> None:
    """The frontend renders the domain the runner would start (condor_vmsubmit/domain/) and refuses
    it with the checks both sides share, loading no module of the runner (condor_vmsubmit/runner/)."""
    code = ("import sys\nfrom condor_vmsubmit.cli.libvirt_submit import main\n"
            "try:\n    main(sys.argv[1:], prog_name='condor_libvirt_submit')\n"
            "finally:\n    print(sorted(m for m in sys.modules if m.startswith('condor_vmsubmit.runner')))\n")
    done = run(sys.executable, "-c", code, corpus_folder("libvirt") / HOSTDEV, "--dry-run", cwd=tmp_path)
    assert done.returncode == 9 and refusals("condor_libvirt_submit", done.stderr) == HOSTDEV_REFUSALS
    assert done.stdout == "[]\n"


@pytest.mark.parametrize("name, elements", [
    (QEMU_COMMANDLINE, ["/domain/qemu:commandline", "/domain/qemu:commandline/qemu:env",
                        "/domain/qemu:commandline/qemu:arg[1]", "/domain/qemu:commandline/qemu:arg[2]"]),
    (XEN_PCI, ["/domain/os/loader", "/domain/devices/emulator", "/domain/devices/disk",
               "/domain/devices/hostdev[1]", "/domain/devices/hostdev[2]"]),
])
def test_one_line_per_refused_element_with_its_reason(tmp_path: Path, name: str, elements: list[str]) -> None:
    done = run("condor_libvirt_submit", corpus_folder("libvirt") / name, "--output-dir", tmp_path / "job",
               cwd=tmp_path)
    assert done.returncode == 9, done.stderr
    refused = refusals("condor_libvirt_submit", done.stderr)
    assert [line.split(" (line ")[0] for line in refused] == elements
    assert all(line.split("): ", 1)[1] for line in refused)  # each with its reason
    assert not (tmp_path / "job").exists()


def test_the_stock_vm_universe_target_is_not_held_to_the_runners_rules(tmp_path: Path) -> None:
    """HTCondor's VM universe never sees the user's XML (it writes its own from vm_disk): the host
    devices are dropped with a warning, as before."""
    done = run("condor_libvirt_submit", corpus_folder("libvirt") / HOSTDEV, "--dry-run", "--target", "vm-universe",
               "--hypervisor", "kvm", cwd=tmp_path)
    assert "refused" not in done.stderr and done.returncode != 9


def test_an_ovf_whose_disk_is_cut_short_is_refused_at_submit_time(tmp_path: Path) -> None:
    ovf = corpus_folder("ovf") / "govmomi__ttylinux-pc_i486-16.1" / "ttylinux-pc_i486-16.1.ovf"
    done = run("condor_ovf_submit", ovf, "--dry-run", cwd=tmp_path)
    assert done.returncode == 9, done.stderr
    # qemu-img info agrees: "Could not open ...: Invalid footer"
    assert refusals("condor_ovf_submit", done.stderr) == [
        "/domain/devices/disk: image ttylinux-pc_i486-16.1-disk1.vmdk: invalid streamOptimized footer "
        "(the header says it is at the end of the file)"]


def test_an_ova_is_refused_after_extraction_and_nothing_extracted_stays(tmp_path: Path) -> None:
    """glance's test OVA names a VMDK that is a line of text (qemu-img: raw); the runner would refuse it."""
    kept = tmp_path / "job"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's own file stays")
    done = run("condor_ovf_submit", corpus_folder("ovf") / "glance__testserver.ova", "--output-dir", kept,
               cwd=tmp_path)
    assert done.returncode == 9, done.stderr
    assert refusals("condor_ovf_submit", done.stderr) == [
        "/domain/devices/disk[2]: image testserver-disk1.vmdk is a raw image, not vmdk as <driver type> says"]
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]


def test_a_plain_vmdk_passes(tmp_path: Path) -> None:
    """The VMDK frontend's images pass the same rules (every subformat: tests/test_checks_both_sides.py)."""
    done = run("condor_vmdk_submit", corpus_folder("vmdk") / "cot__blank.vmdk", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0 and "refused" not in done.stderr, done.stderr
