"""The printed description is what gets submitted: htcondor2.Submit parses it back to the same
commands, for every example and a sample of the libvirt corpus, on both targets."""

from __future__ import annotations

from pathlib import Path

import htcondor2
import pytest

from condor_vmsubmit.errors import TargetError, VMSubmitError
from condor_vmsubmit.formats import load
from condor_vmsubmit.translate import TARGETS, SubmitDescription, TranslateOptions, translate

from conftest import corpus_folder, expected

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAMPLE_STEP = 4  # every 4th libvirt-accepted corpus file: about 370 domains


def example_files() -> list[Path]:
    patterns = ("libvirt/*.xml", "ovf/*.ovf", "ovf/*.ova", "vmdk/*.vmdk")
    return sorted(path for pattern in patterns for path in EXAMPLES.glob(pattern))


def assert_round_trip(description: SubmitDescription) -> None:
    parsed = htcondor2.Submit(description.text())
    assert list(parsed.items()) == list(description.commands)
    assert parsed.getQArgs() == ("" if description.queue == 1 else str(description.queue))


def translations(path: Path, **options):
    spec = load(path)
    for target in TARGETS:
        try:
            yield translate(spec, TranslateOptions(target=target, output_dir="/tmp/out dir", **options))
        except TargetError:
            assert target == "vm-universe"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_round_trip(path: Path) -> None:
    for description in translations(path, queue=4, batch_name="demo $(x)",
                                    append=(("MY.Project", '"vm jobs"'), ("priority", "5"))):
        assert_round_trip(description)


def test_examples_exist() -> None:
    assert len(example_files()) >= 3


def test_corpus_sample_round_trips() -> None:
    folder = corpus_folder("libvirt")
    accepted = sorted(name for name, facts in expected("libvirt").items() if facts.get("libvirt_accepts"))
    checked = 0
    for name in accepted[::SAMPLE_STEP]:
        try:
            descriptions = list(translations(folder / name))
        except VMSubmitError:
            continue  # e.g. two disks with one file name: refused with a clear line, nothing to parse
        for description in descriptions:
            assert_round_trip(description)
            checked += 1
    print(f"{checked} descriptions from {len(accepted[::SAMPLE_STEP])} corpus domains parsed back identically")
    assert checked >= len(accepted[::SAMPLE_STEP])
