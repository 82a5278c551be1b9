"""The submit side and the runner reach the same safety verdict on the libvirt corpus.

For every corpus domain the libvirt frontend can read, the test makes the files its job would
transfer (real images of the format each disk states, made by qemu-img), then asks both sides:

* the submit side: :func:`~condor_vmsubmit.checks.preflight.preflight_spec`, with the files as the
  submit host sees them;
* the runner: :func:`condor_vmsubmit.runner.libvirt_backend.prepare`, the runner's own code, on a real
  sandbox holding the same files under their base names (what HTCondor's transfer makes).

The refusals must be the same, element by element, except where the two sides cannot see the
same thing, each checked here: the runner resolves symlinks of this host (``/lib`` is ``/usr/lib``
on Debian, so its message adds "it resolves to ..."), and it checks that the host's QEMU emulator
or firmware file named in the XML exists, which the submit side cannot know.  A runner whose
post-match verification stops the job first (exit 111: a block disk, an image the XML misnames)
never gets to the safety rules; those files are counted, and a host disk must be refused by the
submit side's safety rules too.  Jobs are translated with ``--hypervisor qemu``, the one this host
runs (a bhyve or lxc domain would otherwise stop at the runner's hypervisor check).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import classad2
import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.checks.policy import Policy
from condor_vmsubmit.checks.preflight import preflight_spec
from condor_vmsubmit.domain.sandbox import Sandbox
from condor_vmsubmit.errors import VMSubmitError
from condor_vmsubmit.formats import load, vmdk
from condor_vmsubmit.formats.ovf.extract import plan_disks
from condor_vmsubmit.runner.backend import Options, Stop
from condor_vmsubmit.runner.chirp import Reporter
from condor_vmsubmit.runner.job import Job
from condor_vmsubmit.runner.libvirt_backend import prepare
from condor_vmsubmit.spec import VMSpec
from condor_vmsubmit.translate import SubmitDescription, TranslateOptions, translate
from condor_vmsubmit.xmlsafe import parse_file

from conftest import corpus_folder

RESOLVES = re.compile(r" \(it resolves to [^)]*\)")
# What only the execute node can tell: its emulator, its firmware files.
HOST_EMULATOR = re.compile(r"emulator '(/usr/[^']+)' is not one of the host's QEMU system emulators")
HOST_FIRMWARE = re.compile(r"'(/usr/share/[^']+)' is outside the job's sandbox")
MACHINE_AD = classad2.ClassAd('[Memory = 100000000; Cpus = 100000; VM_HYPERVISORS = { "qemu" }]')
IMAGE_FORMATS = ("qcow2", "vmdk")


def make_inputs(spec: VMSpec, description: SubmitDescription, folder: Path) -> list[Path]:
    """The files the job transfers, in ``folder`` under their base names: the spec and domain
    XML as the frontend writes them, copies of the files that exist, images made for the others;
    their paths on this 'submit host'."""
    formats = {PurePosixPath(d.source).name: d.format for d in spec.disks if d.source}
    folders = {PurePosixPath(s.source.rstrip("/")).name for s in spec.shared_folders}
    written = {PurePosixPath(f.path).name: f for f in description.job_files}
    made = []
    for path in description.input_files:
        name = PurePosixPath(path).name
        local = folder / name
        if name in written:
            text = written[name].text
            local.write_text(text) if text is not None else shutil.copyfile(written[name].copy_of, local)
        elif Path(path).is_file():  # a real file of the corpus (a VMDK and its extents, an OVF's disk)
            shutil.copyfile(path, local)
        elif name in folders:
            local.mkdir(exist_ok=True)
        elif formats.get(name) in IMAGE_FORMATS:
            subprocess.run(["qemu-img", "create", "-q", "-f", formats[name], str(local), "1M"], check=True)
        else:
            local.write_bytes(b"\0" * 4096)
        made.append(local)
    return made


def runner_verdict(spec: VMSpec, inputs: list[Path], sandbox: Path) -> tuple[int, list[str]]:
    """What the runner's prepare() says about the job whose sandbox holds ``inputs``: 0 and no
    refusals, or its exit code and its refusals (or its reason, for other codes)."""
    for local in inputs:
        target = sandbox / local.name
        shutil.copytree(local, target) if local.is_dir() else os.link(local, target)
    box = Sandbox(sandbox)
    user = parse_file(box.domain_xml_file) if box.domain_xml_file.exists() else None
    job = Job(box, VMSpec.from_json(box.spec_file.read_text()), classad2.ClassAd("[ClusterId = 1; ProcId = 0]"),
              MACHINE_AD, user)
    try:
        prepare(job, Options(policy=Policy()), Reporter(environ={}, stream=io.StringIO()))
    except VMSubmitError as error:  # the runner's cli holds the job with this line
        return jobcontract.EXIT_REFUSED, [error.one_line()]
    except Stop as stop:
        reason = stop.outcome.reason or ""
        if stop.outcome.code == jobcontract.EXIT_REFUSED and reason.startswith("refused: "):
            return stop.outcome.code, re.split(r"; (?=/)", reason.removeprefix("refused: "))
        return stop.outcome.code, [reason]
    return 0, []


def explained(line: str) -> bool:
    """A refusal only the runner can make: a host file it looked for and this host does not have."""
    found = HOST_EMULATOR.search(line) or HOST_FIRMWARE.search(line)
    return found is not None and not os.path.exists(found.group(1))


def test_the_submit_side_and_the_runner_agree_on_the_corpus(tmp_path: Path) -> None:
    compared, refused, verified_first, only_runner, host_disks = 0, 0, 0, 0, 0
    for number, path in enumerate(sorted(corpus_folder("libvirt").glob("*.xml"))):
        try:
            spec = load(path, "libvirt")
            description = translate(spec, TranslateOptions(hypervisor="qemu", output_dir=str(tmp_path / "out")))
        except VMSubmitError:
            continue  # the frontend stops before any check (exit 3, 4 or 6)
        folder, sandbox = tmp_path / f"s{number}", tmp_path / f"b{number}"
        folder.mkdir()
        sandbox.mkdir()
        inputs = make_inputs(spec, description, folder)
        try:
            submit = [RESOLVES.sub("", str(r)) for r in preflight_spec(spec, Policy(), map(str, inputs)).refusals]
        except VMSubmitError as error:  # refused while building the domain (exit 4): the runner too
            submit = [error.one_line()]
        code, lines = runner_verdict(spec, inputs, sandbox)
        shutil.rmtree(folder)
        shutil.rmtree(sandbox)
        if code == jobcontract.EXIT_MISMATCH:
            verified_first += 1
            if "disk cannot come with the job" in lines[0]:  # a host disk, which the safety rules refuse
                assert any(line.startswith("/domain/devices/disk") for line in submit), path.name
                host_disks += 1
            continue
        assert code in (0, jobcontract.EXIT_REFUSED), f"{path.name}: {code} {lines}"
        runner = [RESOLVES.sub("", line) for line in lines]
        extra = [line for line in runner if line not in submit]
        assert all(explained(line) for line in extra), f"{path.name}: only the runner refuses {extra}"
        assert [line for line in runner if line not in extra] == submit, path.name
        compared += 1
        refused += bool(submit)
        only_runner += bool(extra) and not submit
    print(f"compared {compared} (refused on both sides: {refused}; only the runner, for host files: "
          f"{only_runner}); the runner's verification first: {verified_first} (a host disk: {host_disks})")
    assert compared >= 1000 and refused >= 300


@pytest.mark.parametrize("name", ["libvirt-9.0.0__lxcconf2xmldata__lxcconf2xml-miscnetwork.xml",
                                  "virt-manager__cli__virtxml__virtxml-qemu-commandline-clear.xml"])
def test_hostile_corpus_domains_are_refused_by_both_sides_alike(tmp_path: Path, name: str) -> None:
    path = corpus_folder("libvirt") / name
    spec = load(path, "libvirt")
    description = translate(spec, TranslateOptions(hypervisor="qemu", output_dir=str(tmp_path)))
    (tmp_path / "in").mkdir()
    (tmp_path / "box").mkdir()
    inputs = make_inputs(spec, description, tmp_path / "in")
    submit = [str(r) for r in preflight_spec(spec, Policy(), map(str, inputs)).refusals]
    code, runner = runner_verdict(spec, inputs, tmp_path / "box")
    assert code == jobcontract.EXIT_REFUSED and runner == submit and len(submit) == 4


def agree(spec: VMSpec, description: SubmitDescription, folder: Path) -> list[str]:
    """The refusals both sides find for the job (asserting they are the same)."""
    (folder / "in").mkdir()
    (folder / "box").mkdir()
    inputs = make_inputs(spec, description, folder / "in")
    submit = [str(r) for r in preflight_spec(spec, Policy(), map(str, inputs)).refusals]
    code, runner = runner_verdict(spec, inputs, folder / "box")
    if code == jobcontract.EXIT_MISMATCH:  # the runner's verification read the broken image first: same words
        assert [line.split(": ", 2)[2] for line in submit] == [line.split(": ", 1)[1] for line in runner]
    else:
        assert (code, runner) == ((jobcontract.EXIT_REFUSED, submit) if submit else (0, [])), spec.source_path
    return submit


def test_both_sides_agree_on_the_vmdk_corpus_and_the_ovf_appliances_with_their_disks(tmp_path: Path) -> None:
    """Real disk files this time: every VMDK of the corpus the VMDK frontend takes (extents and all), and
    the OVF descriptors whose disks are next to them; the frontends' own checks come first."""
    verdicts = {}
    images = [p for p in corpus_folder("vmdk").iterdir() if p.suffix == ".vmdk" and not p.stem[-5:-3] == "-s"]
    appliances = sorted(corpus_folder("ovf").glob("*/*.ovf"))
    for number, path in enumerate(sorted(images) + appliances):
        try:
            if path.suffix == ".ovf":
                spec = load(path)
                spec = plan_disks(spec, tmp_path / "out").apply(spec)
                extra: tuple[str, ...] = ()
            else:
                spec, extra = vmdk.build(path)
            description = translate(spec, TranslateOptions(hypervisor="qemu", output_dir=str(tmp_path / "out"),
                                                           extra_input_files=extra))
        except VMSubmitError:
            continue  # the frontend stops before any check
        (tmp_path / str(number)).mkdir()
        verdicts[path.name] = agree(spec, description, tmp_path / str(number))
    refused = {name: lines for name, lines in verdicts.items() if lines}
    print(f"{len(verdicts)} compared; refused: {refused}")
    assert len(verdicts) >= 30  # flat VMDKs whose big extents the corpus does not store stop at the frontend
    # the one refused: a disk the corpus keeps cut short (qemu-img info: "Invalid footer")
    assert list(refused) == ["ttylinux-pc_i486-16.1.ovf"]
