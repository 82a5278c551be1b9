"""Submissions to a real HTCondor pool: the job ads the schedd keeps, then removal.

Marked ``pool``; skipped with a reason unless ``CONDOR_CONFIG`` is set and ``condor_q``
answers.  Jobs are submitted on hold (``--append hold=true``) so nothing runs, and
every cluster is removed at the end.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pool import NEEDS_POOL

from condor_vmsubmit import jobcontract
from condor_vmsubmit.jobcontract import request_memory_mib

pytestmark = NEEDS_POOL

PROGRAM = shutil.which("condor_libvirt_submit") or "condor_libvirt_submit"
MEMORY_MIB = 128
DOMAIN = f"""<domain type='qemu'><name>pool-test</name><memory unit='MiB'>{MEMORY_MIB}</memory><vcpu>2</vcpu>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>
<source file='disk.raw'/><target dev='vda' bus='virtio'/></disk>
<interface type='user'><model type='virtio'/></interface></devices></domain>"""


@pytest.fixture
def schedd():
    import htcondor2

    schedd = htcondor2.Schedd()
    clusters: list[int] = []
    yield schedd, clusters
    for cluster in clusters:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


@pytest.fixture
def domain(tmp_path: Path) -> Path:
    (tmp_path / "disk.raw").write_bytes(b"\0" * 65536)
    path = tmp_path / "pool-test.xml"
    path.write_text(DOMAIN)
    return path


def submit(*args: str, clusters: list[int], hold: bool = True) -> int:
    result = subprocess.run([PROGRAM, *args, *(("-append", "hold=true") if hold else ())], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"Submitting job\(s\)\.+\n(\d+) job\(s\) submitted to cluster (\d+)\.\n", result.stdout)
    assert match, result.stdout
    clusters.append(int(match.group(2)))
    return int(match.group(2))


def test_runner_job_ads(schedd, domain: Path, tmp_path: Path) -> None:
    handle, clusters = schedd
    cluster = submit(str(domain), "-queue", "2", "-batch-name", "vmsubmit-pool-test",
                     "--output-dir", str(tmp_path / "job"), clusters=clusters)
    ads = handle.query(f"ClusterId == {cluster}")
    assert len(ads) == 2
    ad = ads[0]
    assert ad["VM_TYPE"] == "libvirt-managed"
    assert ad["VM_HYPERVISOR"] == "qemu"
    assert ad["VM_ATTR_VCPUS"] == 2
    assert ad["RequestCpus"] == 2
    assert ad["RequestMemory"] == request_memory_mib(MEMORY_MIB * 1024**2)
    assert ad["JobBatchName"] == "vmsubmit-pool-test"
    assert ad["SuccessCheckpointExitCode"] == jobcontract.EXIT_CHECKPOINTED  # checkpoint_exit_code
    assert ad["WantIOProxy"] is True
    assert jobcontract.SPEC_FILE in ad["TransferInput"] and "disk.raw" in ad["TransferInput"]
    assert "TARGET.VM_HYPERVISORS" in str(ad.lookup("Requirements"))
    assert (tmp_path / "job" / jobcontract.SPEC_FILE).is_file()


def test_vm_universe_and_spool(schedd, domain: Path, tmp_path: Path) -> None:
    handle, clusters = schedd
    # condor_submit refuses hold=true with -spool: the spooled job is removed at the end instead
    cluster = submit(str(domain), "--target", "vm-universe", "-spool", "--output-dir", str(tmp_path / "vm"),
                     clusters=clusters, hold=False)
    (ad,) = handle.query(f"ClusterId == {cluster}")
    assert ad["JobUniverse"] == 13
    assert ad["JobVMType"] == "kvm"
    assert ad["JobVMMemory"] == MEMORY_MIB


def test_rejected_job_is_one_line(schedd, domain: Path, tmp_path: Path) -> None:
    result = subprocess.run([PROGRAM, str(domain), "--output-dir", str(tmp_path / "job"),
                             "-append", "request_memory = (", "-append", "hold=true"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]  # notes may come first
    assert len(errors) == 1 and "error: submission to the schedd failed" in errors[0], result.stderr


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "libvirt"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.xml")), ids=lambda p: p.name)
def test_examples_submit(schedd, example: Path, tmp_path: Path) -> None:
    """Each example, its disks taken as already on the nodes (they are not on this machine)."""
    from condor_vmsubmit.checks.policy import Policy
    from condor_vmsubmit.checks.preflight import preflight_spec
    from condor_vmsubmit.formats.libvirt import load
    from condor_vmsubmit.translate import TranslateOptions, translate

    description = translate(load(example), TranslateOptions(output_dir=str(tmp_path), transfer_disks=False))
    written = {f.path for f in description.job_files}
    missing = [path for path in description.input_files if path not in written and not Path(path).exists()]
    if missing:
        pytest.skip(f"{example.name} transfers {missing[0]}, which this machine lacks")
    refusals = preflight_spec(load(example), Policy(), description.input_files, node_settings=False).refusals
    if refusals:  # minimal.xml: a disk without a format, which the runner would refuse on the node
        done = subprocess.run([PROGRAM, str(example), "--no-transfer-disks", "--output-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 9 and all(f"refused: {r}" in done.stderr for r in refusals), done.stderr
        return
    handle, clusters = schedd
    cluster = submit(str(example), "--no-transfer-disks", "--hypervisor", "any", "--output-dir", str(tmp_path),
                     clusters=clusters)
    (ad,) = handle.query(f"ClusterId == {cluster}")
    assert ad["VM_ATTR_NAME"] == load(example).name
    assert ad["VM_ATTR_DISKS_TRANSFERRED"] is False
