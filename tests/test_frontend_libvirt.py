"""``condor_libvirt_submit``: options in both spellings, dry run, JSON, output dir, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from condor_vmsubmit import jobcontract
from condor_vmsubmit.cli.libvirt_submit import main
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import VMSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "libvirt"
WEB = EXAMPLES / "webserver.xml"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="condor_libvirt_submit")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_both_spellings_give_the_same_dry_run() -> None:
    htcondor_style = invoke(WEB, "-dry-run", "-name", "s1@host", "-pool", "cm.example.org", "-queue", "2",
                            "-batch-name", "web", "-append", "priority=3", "-target", "runner")
    gnu_style = invoke(WEB, "--dry-run", "--name", "s1@host", "--pool", "cm.example.org", "--queue", "2",
                       "--batch-name", "web", "-a", "priority = 3")
    assert htcondor_style.exit_code == 0, htcondor_style.output
    assert htcondor_style.stdout == gnu_style.stdout
    assert htcondor_style.stdout.endswith("\npriority = 3\nqueue 2\n")
    assert "batch_name = web\n" in htcondor_style.stdout


def test_dry_run_writes_nothing_and_says_where_it_would(in_tmp: Path) -> None:
    result = invoke(WEB, "--dry-run")
    assert result.exit_code == 0
    assert list(in_tmp.iterdir()) == []
    assert f"would be written to {in_tmp / 'web01.vmjob'}" in result.stderr
    assert f"transfer_input_files = {in_tmp / 'web01.vmjob' / jobcontract.SPEC_FILE}," in result.stdout


def test_dry_run_with_output_dir_writes_the_spec_and_xml(in_tmp: Path) -> None:
    result = invoke(WEB, "--dry-run", "--output-dir", "job")
    assert result.exit_code == 0
    assert VMSpec.from_json((in_tmp / "job" / jobcontract.SPEC_FILE).read_text()) == load(WEB)
    assert (in_tmp / "job" / jobcontract.DOMAIN_XML_FILE).read_bytes() == WEB.read_bytes()
    assert f"initialdir = {in_tmp / 'job'}\n" in result.stdout


def test_json_output() -> None:
    result = invoke(WEB, "--dry-run", "--json", "--target", "vm-universe")
    data = json.loads(result.stdout)
    assert data["submit"].startswith("universe = vm\n")
    assert ["vm_type", "kvm"] in data["commands"]
    assert data["queue"] == 1
    assert {"source": "<interface> #2", "level": "warning",
            "message": "dropped: the stock VM universe has one NIC"} in data["notes"]
    assert result.stderr == "", "notes travel in the JSON, not on stderr"


def test_warnings_go_to_stderr_and_strict_refuses() -> None:
    warned = invoke(WEB, "--dry-run", "--target", "vm-universe")
    assert warned.exit_code == 0
    assert "condor_libvirt_submit: warning: <os>: efi firmware not expressible" in warned.stderr
    refused = invoke(WEB, "--dry-run", "--target", "vm-universe", "--strict")
    assert refused.exit_code == 6
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"condor_libvirt_submit: error: {WEB}: --strict: target vm-universe")


def test_hypervisor_and_no_transfer_disks() -> None:
    result = invoke(WEB, "--dry-run", "--hypervisor", "ANY", "--no-transfer-disks")
    assert 'MY.VM_HYPERVISOR = "any"' in result.stdout
    assert "/var/lib/libvirt/images" not in result.stdout.split("transfer_input_files = ")[1].split("\n")[0]


@pytest.mark.parametrize("args", [
    ("--queue", "0"), ("--append", "no-equals-sign"), ("--append", "bad key=1"),
    ("--target", "vmware"), ("--hypervisor", "kvm; rm"), ("--append", "queue=3"),
])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = invoke(WEB, "--dry-run", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_input_errors_exit_3_and_4(in_tmp: Path) -> None:
    missing = invoke(in_tmp / "nope.xml", "--dry-run")
    assert missing.exit_code == 3 and "nope.xml" in missing.stderr
    broken = in_tmp / "broken.xml"
    broken.write_text("<domain><name>x</name>")
    assert invoke(broken, "--dry-run").exit_code == 3
    hostile = in_tmp / "xxe.xml"
    hostile.write_text('<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><domain><name>&x;</name></domain>')
    result = invoke(hostile, "--dry-run")
    assert result.exit_code == 4 and result.stderr.count("\n") == 1


def test_local_checks_the_disks_before_running(in_tmp: Path) -> None:
    explicit = in_tmp / "minimal-raw.xml"  # minimal.xml's disk states no format: the safety rules refuse it first
    explicit.write_text((EXAMPLES / "minimal.xml").read_text().replace("<source ", "<driver type='raw'/><source "))
    result = invoke(explicit, "--local")
    assert result.exit_code == 3
    assert "/var/lib/libvirt/images/minimal.img: input file not found" in result.stderr


def test_dry_run_imports_neither_htcondor_nor_rich_nor_xmlschema() -> None:
    code = ("import sys\nfrom condor_vmsubmit.cli.libvirt_submit import main\n"
            f"sys.argv = ['condor_libvirt_submit', '--dry-run', {str(WEB)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('htcondor2', 'classad2', 'htcondor', 'classad', 'rich', 'xmlschema'))\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr
