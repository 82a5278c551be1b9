"""The libvirt adapter against the real-world corpus and what libvirt itself made of it.

``../shared/corpus/libvirt/EXPECTED.json`` records, for every file, whether libvirt
9.0 accepted it and what its test driver reported (dom.XMLDesc of the inactive domain).
Each accepted file must agree with our spec on every fact below; rejected files must
give a spec or a :class:`VMSubmitError`, never another exception.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from condor_vmsubmit.errors import VMSubmitError
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import VMSpec

from conftest import corpus_folder, expected


@dataclass(frozen=True)
class Outcome:
    """What loading one corpus file gave: a spec, our error, or another exception."""

    name: str
    facts: dict
    spec: VMSpec | None = None
    error: VMSubmitError | None = None
    crash: BaseException | None = None


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    folder = corpus_folder("libvirt")
    results = []
    for name, facts in sorted(expected("libvirt").items()):
        try:
            results.append(Outcome(name, facts, spec=load(folder / name)))
        except VMSubmitError as error:
            results.append(Outcome(name, facts, error=error))
        except Exception as crash:  # noqa: BLE001 - a crash is exactly what we report
            results.append(Outcome(name, facts, crash=crash))
    return results


def expected_firmware(facts: dict) -> str:
    os_facts = facts["os"]
    return "efi" if os_facts.get("firmware") == "efi" or os_facts.get("loader_type") == "pflash" else "bios"


def disagreements(spec: VMSpec, facts: dict) -> list[str]:
    """Every fact of issue 2 item 5 (plus current vCPUs and domain type) where spec and libvirt differ."""
    found = []

    def check(what: str, ours: object, libvirt: object) -> None:
        if ours != libvirt:
            found.append(f"{what}: ours {ours!r}, libvirt {libvirt!r}")

    check("memory_bytes", spec.memory_bytes, facts["max_memory_kib"] * 1024)
    check("vcpus", spec.vcpus, facts["vcpus_maximum"])
    check("vcpus_current", spec.vcpus_current or spec.vcpus, facts["vcpus_current"])
    check("domain type", spec.hypervisor, facts["domain_type"])
    check("disks by device", dict(Counter(d.device for d in spec.disks)), facts["disk_count_by_device"])
    check("interfaces", len(spec.nics), facts["interface_count"])
    check("links down", sum(nic.link == "down" for nic in spec.nics), facts["interface_link_down_count"])
    check("MACs", sorted(nic.mac for nic in spec.nics if nic.mac), sorted(m.lower() for m in facts["macs"]))
    check("firmware", spec.firmware, expected_firmware(facts))
    return found


def accepted(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.facts["libvirt_accepts"]]


def report(line: str, capsys: pytest.CaptureFixture) -> None:
    """Print past pytest's capture so the figure shows in every run, -s or not."""
    with capsys.disabled():
        print(f"\n{line}")


def test_every_accepted_file_agrees_with_libvirt(outcomes: list[Outcome], capsys: pytest.CaptureFixture) -> None:
    problems = {}
    for outcome in accepted(outcomes):
        if outcome.spec is None:
            problems[outcome.name] = [f"not read: {outcome.error or repr(outcome.crash)}"]
        elif found := disagreements(outcome.spec, outcome.facts):
            problems[outcome.name] = found
    total = len(accepted(outcomes))
    agreeing = total - len(problems)
    report(f"libvirt corpus: {agreeing}/{total} accepted files agree with libvirt "
           f"({100 * agreeing / total:.1f}%)", capsys)
    assert total > 1000, "the corpus should hold well over a thousand accepted files"
    assert not problems, "\n".join(f"{name}: {'; '.join(p)}" for name, p in list(problems.items())[:20])


def test_rejected_files_give_a_spec_or_one_clear_error(outcomes: list[Outcome], capsys: pytest.CaptureFixture) -> None:
    rejected = [o for o in outcomes if not o.facts["libvirt_accepts"]]
    crashes = [f"{o.name}: {o.crash!r}" for o in rejected if o.crash is not None]
    errors = [o.error for o in rejected if o.error is not None]
    report(f"libvirt corpus: {len(rejected)} files libvirt rejects: {len(rejected) - len(errors) - len(crashes)} "
           f"read anyway, {len(errors)} refused with a clear error, {len(crashes)} crashes", capsys)
    assert rejected
    assert not crashes, "\n".join(crashes)
    for error in errors:
        line = error.one_line()
        assert "\n" not in line and line.startswith(str(corpus_folder("libvirt")))


def test_disks_in_libvirt_order_with_libvirt_buses(outcomes: list[Outcome], capsys: pytest.CaptureFixture) -> None:
    """Disks come in libvirt's order; bus, target, type and format match each one."""
    compared = agreeing = 0
    wrong = []
    for outcome in accepted(outcomes):
        ours = [(d.target, d.bus, d.device, d.source_type, d.format) for d in outcome.spec.disks]
        libvirt = [(d["target_dev"], d["bus"], d["device"], d["type"], d["driver_type"])
                   for d in outcome.facts["disks"]]
        for mine, theirs in zip(ours, libvirt, strict=True):
            compared += 1
            agreeing += mine == theirs
            if mine != theirs:
                wrong.append(f"{outcome.name}: ours {mine}, libvirt {theirs}")
    report(f"libvirt corpus: {agreeing}/{compared} disks agree on order, bus, target, type and format", capsys)
    assert compared > 1000
    assert not wrong, "\n".join(wrong[:20])


def test_nics_match_libvirt_one_by_one(outcomes: list[Outcome]) -> None:
    wrong = []
    for outcome in accepted(outcomes):
        ours = [(n.network_kind, n.model, n.link) for n in outcome.spec.nics]
        libvirt = [(i["type"], i["model"], i["link_state"] or "up") for i in outcome.facts["interfaces"]]
        if ours != libvirt:
            wrong.append(f"{outcome.name}: ours {ours}, libvirt {libvirt}")
    assert not wrong, "\n".join(wrong[:20])


def test_corpus_has_every_file_expected_lists(outcomes: list[Outcome]) -> None:
    folder = Path(corpus_folder("libvirt"))
    on_disk = {p.name for p in folder.glob("*.xml")}
    assert on_disk == {o.name for o in outcomes}
