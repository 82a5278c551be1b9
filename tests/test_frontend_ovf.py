"""condor_ovf_submit and ``condor_vmsubmit inspect`` on real appliances (dry runs; no pool needed)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from condor_vmsubmit.cli.main import main as vmsubmit
from condor_vmsubmit.cli.ovf_submit import extract
from condor_vmsubmit.cli.ovf_submit import main as ovf_submit
from condor_vmsubmit.cli.submit_options import SubmitOptions
from condor_vmsubmit.formats import load

from conftest import corpus_folder

TTY = "govmomi__ttylinux-pc_i486-16.1/ttylinux-pc_i486-16.1"


def corpus(name: str) -> str:
    return str(corpus_folder("ovf") / name)


def run(command, *args: str, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    if cwd is None:
        return runner.invoke(command, list(args), prog_name="condor_ovf_submit")
    with contextlib.chdir(cwd):
        return runner.invoke(command, list(args), prog_name="condor_ovf_submit")


def test_list_profiles_marks_the_one_used() -> None:
    result = run(ovf_submit, corpus("cot__csr1000v.ovf"), "--list-profiles", "--profile", "4CPU-4GB")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line[2:].split()[0].rstrip(":") for line in lines] == ["1CPU-4GB", "2CPU-4GB", "4CPU-4GB", "4CPU-8GB"]
    assert lines[2].startswith("* 4CPU-4GB") and lines[0].startswith("  1CPU-4GB (default)")


def test_a_eula_blocks_the_submit_until_accepted(tmp_path: Path) -> None:
    appliance = corpus("govmomi__configspec.ovf")
    refused = run(ovf_submit, appliance, "--no-transfer-disks")
    assert refused.exit_code == 3
    assert "has a EULA: read it with --show-eula, then submit with --accept-eula" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    shown = run(ovf_submit, appliance, "--show-eula")
    assert shown.exit_code == 0 and shown.stdout.startswith("--- EULA 1 of 1 ---")
    accepted = run(ovf_submit, appliance, "--accept-eula", "--dry-run", "--no-transfer-disks")
    assert accepted.exit_code == 0, accepted.stderr
    assert "request_cpus = 2" in accepted.stdout


def test_dry_run_of_an_ova_plans_the_extraction_and_writes_nothing(tmp_path: Path) -> None:
    result = run(ovf_submit, corpus(f"{TTY}.ova"), "--dry-run", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    description = json.loads(result.stdout)
    disk = "ttylinux-pc_i486-16.1-disk1.vmdk"
    assert any(path.endswith(f"ttylinux-pc_i486-16.1.vmjob/{disk}") for path in description["input_files"])
    assert "dry run: the disks are not verified" in result.stderr
    assert not any(tmp_path.rglob(disk))


def test_extract_puts_the_ova_disk_once_into_the_output_dir(tmp_path: Path) -> None:
    spec = load(corpus(f"{TTY}.ova"))
    extracted = extract(spec, SubmitOptions(output_dir=tmp_path / "job"))
    disk = tmp_path / "job" / "ttylinux-pc_i486-16.1-disk1.vmdk"
    assert extracted.disks[0].source == str(disk)
    assert disk.read_bytes() == (corpus_folder("ovf") / TTY).with_name("ttylinux-pc_i486-16.1-disk1.vmdk").read_bytes()
    assert extract(spec, SubmitOptions(no_transfer_disks=True)).disks[0].source == spec.disks[0].source


def test_appliance_without_memory_needs_memory_option() -> None:
    name = "govmomi__external__OVFToolTemplates__OVF__xmltestfiles__AnnotationSection__Neg__ann_sec_elsewhr.ovf"
    refused = run(ovf_submit, corpus(name), "--dry-run", "--no-transfer-disks")
    assert refused.exit_code == 3 and "gives no memory: say how much with --memory" in refused.stderr
    given = run(ovf_submit, corpus(name), "--dry-run", "--no-transfer-disks", "--memory", "1GiB")
    assert given.exit_code == 0, given.stderr
    assert "MY.VM_ATTR_MEMORY_MB = 1024" in given.stdout


@pytest.mark.parametrize("args,message", [
    (("--property", "loadbalance.dataplane_port=99999"), "above the maximum 65535"),
    (("--property", "nokey"), "is not KEY=VALUE"),
    (("--profile", "huge"), "no deployment profile 'huge'"),
])
def test_bad_options_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run(ovf_submit, corpus("govmomi__configspec.ovf"), "--accept-eula", "--dry-run", *args)
    assert result.exit_code == 3 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_escaping_href_is_refused_with_exit_4() -> None:
    descriptor = corpus("govmomi__external__OVFToolTemplates__OVF__xmltestfiles__DiskMode__Pos__nvm001.ovf")
    result = run(ovf_submit, descriptor, "--dry-run", "--memory", "1GiB")
    assert result.exit_code == 4 and "escapes the package folder" in result.stderr


def test_collection_lists_its_systems_and_inspect_chooses_one() -> None:
    name = "govmomi__external__nostalgia-ttylinux-vapp.ovf"
    result = run(ovf_submit, corpus(name), "--dry-run")
    assert result.exit_code == 3
    assert "2 systems (Nostalgia, ttylinux); choose one with --system ID" in result.stderr
    shown = CliRunner().invoke(vmsubmit, ["inspect", corpus(name), "--system", "ttylinux", "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.output)["extras"]["ovf_system"] == "ttylinux"


def test_inspect_profiles_properties_and_validate() -> None:
    listed = CliRunner().invoke(vmsubmit, ["inspect", corpus("cot__csr1000v.ovf"), "--list-profiles"])
    assert listed.exit_code == 0 and "* 1CPU-4GB (default)" in listed.output
    shown = CliRunner().invoke(vmsubmit, ["inspect", corpus("cot__csr1000v.ovf"), "--json", "--validate",
                                          "--profile", "2CPU-4GB", "--property",
                                          "com.cisco.csr1000v.hostname.1=edge1"])
    assert shown.exit_code == 0, shown.output
    spec = json.loads(shown.output)
    assert spec["vcpus"] == 2 and spec["source_format"] == "ovf"
    assert json.loads(spec["extras"]["ovf_properties"])["com.cisco.csr1000v.hostname.1"] == "edge1"
