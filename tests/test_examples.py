"""The examples' expected output, byte for byte: what ``condor_libvirt_submit --dry-run`` prints for
each example and target, and the domain XML the runner would start for it.

The files are in ``examples/libvirt/expected/`` (a reader sees there what each example becomes).
After a deliberate change of the output, regenerate them and review the diff::

    VMSUBMIT_UPDATE_EXPECTED=1 python -m pytest tests/test_examples.py

The job folder is ``--output-dir TMP/jobs/NAME``; TMP is written ``/home/alice`` in the files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from condor_vmsubmit.checks.safety import pin_graphics_to_loopback
from condor_vmsubmit.cli.libvirt_submit import main
from condor_vmsubmit.domain.render import render_spec, replay_domain, to_text
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.domain.shares import add_filesystems, plan_shares
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import VMSpec
from condor_vmsubmit.translate import TARGETS
from condor_vmsubmit.xmlsafe import parse_file

from conftest import REPO

EXAMPLES = REPO / "examples" / "libvirt"
EXPECTED = EXAMPLES / "expected"
UPDATE = os.environ.get("VMSUBMIT_UPDATE_EXPECTED") == "1"
HOME = "/home/alice"
# The runner's view: a fixed sandbox and job, KVM where the job asks for it, no virtiofsd.
SANDBOX = Sandbox(Path("/var/lib/condor/execute/dir_4242"))
JOB_ID = "submit.example.org#42.0#1700000000"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.xml"))


def compare(path: Path, actual: str) -> None:
    """``actual`` is the content of ``path``; with VMSUBMIT_UPDATE_EXPECTED=1 it becomes it."""
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with VMSUBMIT_UPDATE_EXPECTED=1 to write it"
    assert actual == path.read_text(), f"{path} differs: review the change, regenerate if it is meant"


def dry_run(example: Path, target: str, tmp_path: Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the dry run, TMP written as /home/alice."""
    name = load(example).name
    args = ["--dry-run", "--target", target, "--output-dir", str(tmp_path / "jobs" / name),
            str(example.relative_to(REPO))]
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        result = CliRunner().invoke(main, args, prog_name="condor_libvirt_submit")
    finally:
        os.chdir(cwd)
    return (result.exit_code, result.stdout.replace(str(tmp_path), HOME),
            result.stderr.replace(str(tmp_path), HOME))


def runner_domain(spec: VMSpec) -> str:
    """The domain libvirt_backend.prepare builds for ``spec`` (before the admin policy, none here)."""
    domain_type = "kvm" if spec.hypervisor == "kvm" else "qemu"
    if spec.source_format == "libvirt" and spec.source_path:
        root, _notes = replay_domain(pin_graphics_to_loopback(parse_file(spec.source_path)), SANDBOX,
                                     domain_type=domain_type, job_id=JOB_ID, spec=spec)
    else:
        root = render_spec(spec, SANDBOX, domain_type=domain_type, job_id=JOB_ID)
    add_filesystems(root, plan_shares(spec, SANDBOX, virtiofs_available=False))
    return to_text(root)


def test_every_example_has_its_expected_files_and_no_file_is_left_over() -> None:
    assert len(EXAMPLE_FILES) >= 3
    for example in EXAMPLE_FILES:
        for suffix in ("domain.xml", *(f"{target}.stderr" for target in TARGETS)):
            assert (EXPECTED / f"{example.stem}.{suffix}").exists(), f"{example.stem}.{suffix} is missing"
    stems = {path.stem for path in EXAMPLE_FILES}
    for path in EXPECTED.iterdir():
        if path.name != "README.md":
            assert path.name.split(".")[0] in stems, f"{path} belongs to no example"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_the_dry_run_of_each_example_is_its_expected_output(example: Path, target: str, tmp_path: Path) -> None:
    code, stdout, stderr = dry_run(example, target, tmp_path)
    submit_file = EXPECTED / f"{example.stem}.{target}.sub"
    compare(EXPECTED / f"{example.stem}.{target}.stderr", stderr)
    if stdout or submit_file.exists() and not UPDATE:
        compare(submit_file, stdout)
        assert code == 0
    else:  # the target cannot express this example: the reason is the last line of stderr
        submit_file.unlink(missing_ok=True)
        assert code != 0 and "error:" in stderr.splitlines()[-1]


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_the_domain_the_runner_starts_for_each_example_is_its_expected_xml(example: Path) -> None:
    text = runner_domain(load(example))
    etree.fromstring(text.encode())  # well-formed
    compare(EXPECTED / f"{example.stem}.domain.xml", text)


# --- the documentation shows real output ---------------------------------------------------------

def console_block(doc: Path, command: str) -> list[str]:
    """The lines printed after ``$ COMMAND`` in a console block of ``doc``."""
    lines = doc.read_text().splitlines()
    start = lines.index(f"$ {command}") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(("$ ", "```")))
    return lines[start:end]


def shown_in(line: str, output: list[str]) -> bool:
    """Whether a documented line is a line of ``output``; ``…`` in it stands for anything."""
    pattern = ".*".join(re.escape(part) for part in line.split("…"))
    return any(re.fullmatch(pattern, real) for real in output)


def test_the_libvirt_guide_shows_the_real_dry_run_of_webserver() -> None:
    command = "condor_libvirt_submit -dry-run examples/libvirt/webserver.xml -output-dir ~/jobs/web01"
    shown = [line for line in console_block(REPO / "docs" / "libvirt-frontend.md", command) if line != "…"]
    real = (EXPECTED / "webserver.runner.stderr").read_text() + (EXPECTED / "webserver.runner.sub").read_text()
    missing = [line for line in shown if not shown_in(line, real.splitlines())]
    assert len(shown) > 20
    assert not missing, f"docs/libvirt-frontend.md shows lines the translator does not print: {missing}"
