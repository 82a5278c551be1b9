"""The runner's checks before any guest starts: input it cannot use, a slot that does not fit,
the admin policy (HTCondor knobs, here from the environment) -- exit codes and one-line reasons."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.runner.libvirt_backend import save_image_complete
from condor_vmsubmit.spec import Nic

from guest import FakeChirp, configure_node, console, guest_spec, make_sandbox, runner_env, start_runner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandboxes():
    """Make sandboxes that are removed after the test."""
    made: list[Path] = []

    def make(*args, **kwargs) -> Path:
        made.append(make_sandbox(*args, **kwargs))
        return made[-1]

    yield make
    for sandbox in made:
        shutil.rmtree(sandbox, ignore_errors=True)


def finish(runner: subprocess.Popen) -> tuple[int, str]:
    _, stderr = runner.communicate(timeout=120)
    return runner.returncode, stderr


def test_without_the_starters_ads_the_runner_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "condor_vmsubmit.runner"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == jobcontract.EXIT_START_FAILED
    assert done.stderr.strip() == ("condor_vm_runner: error: $_CONDOR_JOB_AD is not set: the runner runs as "
                                   "an HTCondor job's executable (or through --local)")


def test_the_jobs_libvirtd_starts_before_the_heavy_imports(guest_dir, sandboxes):
    """The guardian (and with it libvirtd) is started before libvirt, the ClassAd library, lxml and
    the HTCondor bindings are loaded, so the daemon comes up while they load."""
    sandbox = sandboxes(guest_dir, "exit 4", job_id="19.0")
    code = ("import sys\nfrom condor_vmsubmit.runner import cli, guard\nstart = guard.GuardianProcess.__init__\n"
            "def recording(self, *args, **kwargs):\n"
            "    heavy = sorted(m for m in ('libvirt', 'classad2', 'lxml', 'htcondor2') if m in sys.modules)\n"
            "    print('LOADED', heavy, file=sys.stderr, flush=True)\n"
            "    start(self, *args, **kwargs)\n"
            "guard.GuardianProcess.__init__ = recording\ncli.main([])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=sandbox, env=runner_env(sandbox), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    assert "LOADED []" in done.stderr


def test_a_sandbox_without_room_for_the_session_is_one_line(guest_dir, sandboxes):
    sandbox = sandboxes(guest_dir, "exit 0", job_id="19.1")
    (sandbox / ".vm").write_text("not a folder")
    code, stderr = finish(start_runner(sandbox))
    assert code == jobcontract.EXIT_START_FAILED
    assert stderr.strip() == (f"condor_vm_runner: error: {sandbox / '.vm'}: cannot make the per-job libvirt "
                              "session's folder: File exists")


@pytest.mark.parametrize("text, says", [
    ("{not json", "not a VM spec"),
    (guest_spec().to_json().replace('"spec_version": 1', '"spec_version": 2'),
     "spec_version 2 is newer than this condor_vmsubmit reads (1)"),
])
def test_a_broken_spec_file_is_one_line(guest_dir, sandboxes, text, says):
    sandbox = sandboxes(guest_dir, "exit 0", job_id="20.0")
    (sandbox / jobcontract.SPEC_FILE).write_text(text)
    code, stderr = finish(start_runner(sandbox))
    assert code == jobcontract.EXIT_START_FAILED
    assert stderr.startswith("condor_vm_runner: error: ") and f"{jobcontract.SPEC_FILE}: {says}" in stderr
    assert "Traceback" not in stderr


def test_a_slot_too_small_holds_the_job_before_anything_starts(guest_dir, sandboxes):
    sandbox = sandboxes(guest_dir, "exit 0", job_id="21.0")
    (sandbox / "machine.ad").write_text('Memory = 200\nCpus = 1\nVM_HYPERVISORS = { "qemu" }\n')
    code, stderr = finish(start_runner(sandbox, knobs={}))
    assert code == jobcontract.EXIT_MISMATCH
    assert "this slot has 200 MiB" in stderr
    # no guest ran; the console log and the checkpoint folder exist, empty: both are output files
    assert (sandbox / jobcontract.CONSOLE_LOG_FILE).read_bytes() == b""
    assert not any((sandbox / jobcontract.CHECKPOINT_DIR).iterdir())


def test_the_admin_policy_can_refuse_the_vm(guest_dir, sandboxes):
    sandbox = sandboxes(guest_dir, "exit 0", job_id="22.0")
    # the node's configuration is the one its machine ad names, whatever the job's CONDOR_CONFIG says
    code, stderr = finish(start_runner(sandbox, knobs={"VMSUBMIT_MAX_MEMORY_MB": "64"},
                                       extra_env={"CONDOR_CONFIG": "/dev/null"}))
    assert code == jobcontract.EXIT_REFUSED
    assert "admin policy" in stderr and "64" in stderr
    assert not console(sandbox)  # nothing ran: the console log is empty (it exists: an output file)


def test_a_job_cannot_lift_the_admins_limits_through_its_environment(guest_dir, sandboxes):
    sandbox = sandboxes(guest_dir, "exit 0", job_id="24.0")
    configure_node(sandbox, {"VMSUBMIT_MAX_MEMORY_MB": "64"})
    code, stderr = finish(start_runner(sandbox, extra_env={"_CONDOR_VMSUBMIT_MAX_MEMORY_MB": "99999"}))
    assert code == jobcontract.EXIT_REFUSED, stderr
    assert "the job's environment overrides _CONDOR_VMSUBMIT_MAX_MEMORY_MB" in stderr
    assert not (sandbox / jobcontract.CONSOLE_LOG_FILE).exists()


def test_without_the_nodes_configuration_the_runner_holds_the_job(guest_dir, sandboxes):
    """No VM_CONDOR_CONFIG in the machine ad (no discovery on the node), or other knobs than
    discovery saw (the configuration changed since): the runner cannot be sure of the policy."""
    sandbox = sandboxes(guest_dir, "exit 0", job_id="25.0")
    (sandbox / "machine.ad").write_text('Memory = 2048\nCpus = 2\nVM_HYPERVISORS = { "qemu" }\n')
    code, stderr = finish(start_runner(sandbox))
    assert code == jobcontract.EXIT_REFUSED
    assert "the machine ad does not say which HTCondor configuration this node uses" in stderr

    configure_node(sandbox, {"VMSUBMIT_MAX_VCPUS": "8"})
    (sandbox / "node_condor_config").write_text("VMSUBMIT_MAX_VCPUS = 16\n")
    code, stderr = finish(start_runner(sandbox))
    assert code == jobcontract.EXIT_REFUSED
    assert "differ from those this node's discovery saw (VM_CONFIG_DIGEST)" in stderr
    assert "the configuration changed since discovery last ran" in stderr
    assert not (sandbox / jobcontract.CONSOLE_LOG_FILE).exists()


@pytest.mark.guest
def test_the_admin_policy_can_change_the_vm_and_the_job_ad_says_what(guest_dir, sandboxes, tmp_path):
    spec = replace(guest_spec(), nics=(Nic(model="virtio", link="up"),))
    sandbox = sandboxes(guest_dir, "ip link set eth0 up; sleep 0.5; cat /sys/class/net/eth0/carrier; exit 0",
                        job_id="23.0", spec=spec)
    chirp = FakeChirp(tmp_path)
    try:
        code, stderr = finish(start_runner(
            sandbox, extra_env={"_CONDOR_CHIRP_CONFIG": str(chirp.config)},
            knobs={"VMSUBMIT_POLICY_XSLT": str(REPO / "examples" / "policy" / "link-down.xsl")}))
        assert code == 0, stderr
        changes = chirp.attrs(jobcontract.POLICY_CHANGES_ATTR)
        assert len(changes) == 1 and "link" in changes[0], chirp.commands
        assert any(c.startswith("ulog admin policy changed the VM") for c in chirp.commands), chirp.commands
        assert "0" in console(sandbox).splitlines(), console(sandbox)  # eth0 has no carrier: link down
    finally:
        chirp.close()


def test_a_save_image_counts_as_complete_only_once_libvirt_marks_it(tmp_path):
    image = tmp_path / "guest.save.partial"
    assert not save_image_complete(image)
    image.write_bytes(b"LibvirtQemudPart" + bytes(4096))  # libvirt's header while the state streams in
    assert not save_image_complete(image)
    image.write_bytes(b"LibvirtQemudSave" + bytes(4096))
    assert save_image_complete(image)
