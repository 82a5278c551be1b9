"""Real-world check: every OVF/OVA of ../shared/corpus/ovf against COT 2.2.1 and virt-v2v 2.2.0.

Where COT accepts a file, the default profile's vCPUs, memory, hard-disk count and
capacities and NIC count must agree with COT, except for two documented choices:

* no processor Item: COT reports 0 CPUs; we assume 1 vCPU (as vSphere deploys it) and warn;
* memory Item without AllocationUnits: COT reads bytes; we read MiB (as VMware and
  virt-v2v do) and warn.

Where COT rejects a file and virt-v2v reads it, we agree with virt-v2v on what it reads
correctly: memory only where it is in MiB (virt-v2v ignores units) and not its 1 TiB
"no memory Item" default, vCPUs and NIC count.  Wherever virt-v2v reads a file, firmware
(VMware's ``firmware`` Config), hard-disk count and removable-drive count agree with it.  Files
neither tool accepts must give a spec or a clear :class:`VMSubmitError`, never a crash.
"""

from __future__ import annotations

from collections import Counter

import pytest

from condor_vmsubmit.errors import VMSubmitError
from condor_vmsubmit.formats import load
from condor_vmsubmit.spec import VMSpec

from conftest import corpus_folder, expected

V2V_NO_MEMORY = 1 << 40
MIB_UNITS = ("byte * 2^20", "byte * 2 ^ 20", "byte*1024*1024", "MegaBytes")


def _descriptors() -> list[str]:
    return sorted(k for k, v in expected("ovf").items() if "cot" in v)


def _load(name: str) -> VMSpec | VMSubmitError:
    try:
        return load(corpus_folder("ovf") / name)
    except VMSubmitError as error:
        return error


def cot_differences(spec: VMSpec, cot: dict) -> list[str]:
    """What the spec says differently from COT's default profile (empty when they agree)."""
    profile = cot["profiles"][cot["default_profile"] or next(iter(cot["profiles"]))]
    problems = []
    cpus = profile["cpus"]
    if cpus == 0:
        if spec.vcpus != 1 or not any("no processor Item" in w for w in spec.warnings):
            problems.append(f"vcpus {spec.vcpus} without a processor Item")
    elif spec.vcpus != cpus:
        problems.append(f"vcpus {spec.vcpus} != {cpus}")
    memory = profile["memory_bytes"]
    if profile.get("memory_virtual_quantity") and profile.get("memory_allocation_units") is None:
        memory = int(profile["memory_virtual_quantity"]) * 2**20
    if spec.memory_bytes != memory:
        problems.append(f"memory {spec.memory_bytes} != {memory}")
    disks = spec.disks_of("disk")
    if len(disks) != profile["item_counts"].get("harddisk", 0):
        problems.append(f"{len(disks)} disks != {profile['item_counts'].get('harddisk', 0)}")
    theirs = {d["capacity_bytes"] for d in cot["disks"]}
    unmatched = [d.capacity_bytes for d in disks if d.capacity_bytes is not None and d.capacity_bytes not in theirs]
    from_properties = sum(1 for d in cot["disks"] if str(d["capacity"]).startswith("${"))
    if len(unmatched) > from_properties:  # COT leaves ${property} capacities unresolved; we resolve them
        problems.append(f"capacities {unmatched} not among COT's {sorted(theirs, key=str)}")
    if len(spec.nics) != profile["nics"]:
        problems.append(f"{len(spec.nics)} NICs != {profile['nics']}")
    return problems


def v2v_differences(spec: VMSpec, v2v: dict, name: str) -> list[str]:
    """What the spec says differently from what virt-v2v reads correctly."""
    problems = []
    if v2v["memory_bytes"] == V2V_NO_MEMORY:
        return problems  # virt-v2v read nothing: its defaults are not file values
    text = (corpus_folder("ovf") / name).read_text(errors="replace") if name.endswith(".ovf") else ""
    in_mib = not text or any(f">{u}<" in text for u in MIB_UNITS)
    if in_mib and spec.memory_bytes != v2v["memory_bytes"]:
        problems.append(f"memory {spec.memory_bytes} != {v2v['memory_bytes']}")
    if spec.vcpus != v2v["nr_vcpus"]:
        problems.append(f"vcpus {spec.vcpus} != {v2v['nr_vcpus']}")
    if len(spec.nics) != len(v2v["nics"]):
        problems.append(f"{len(spec.nics)} NICs != {len(v2v['nics'])}")
    return problems + v2v_device_differences(spec, v2v)


def v2v_device_differences(spec: VMSpec, v2v: dict) -> list[str]:
    """Firmware, hard disks and removable media as virt-v2v lists them."""
    problems = []
    if {"uefi": "efi"}.get(v2v["firmware"], v2v["firmware"]) != spec.firmware:
        problems.append(f"firmware {spec.firmware} != {v2v['firmware']}")
    if len(spec.disks_of("disk")) != len(v2v["disks"]):
        problems.append(f"{len(spec.disks_of('disk'))} disks != {len(v2v['disks'])}")
    removable = len(spec.disks_of("cdrom")) + len(spec.disks_of("floppy"))
    if removable != len(v2v["removable_media"]):
        problems.append(f"{removable} removable drives != {len(v2v['removable_media'])}")
    return problems


def test_corpus_agrees_with_cot_and_virt_v2v() -> None:
    cases = expected("ovf")
    agreed = cot_total = v2v_agreed = v2v_total = 0
    failures = []
    for name in _descriptors():
        cot, v2v = cases[name]["cot"], cases[name]["virt_v2v"]
        result = _load(name)
        if cot.get("cot_accepts"):
            cot_total += 1
            problems = [str(result)] if isinstance(result, VMSubmitError) else cot_differences(result, cot)
            agreed += not problems
            failures += [f"{name}: COT: {p}" for p in problems]
            if not isinstance(result, VMSubmitError) and v2v.get("v2v_accepts") \
                    and v2v["memory_bytes"] != V2V_NO_MEMORY:
                failures += [f"{name}: virt-v2v: {p}" for p in v2v_device_differences(result, v2v)]
        elif v2v.get("v2v_accepts") and v2v["memory_bytes"] != V2V_NO_MEMORY:
            v2v_total += 1
            problems = [str(result)] if isinstance(result, VMSubmitError) else v2v_differences(result, v2v, name)
            v2v_agreed += not problems
            failures += [f"{name}: virt-v2v: {p}" for p in problems]
    print(f"\nOVF corpus: {agreed}/{cot_total} COT-accepted files agree ({100 * agreed / cot_total:.1f}%); "
          f"{v2v_agreed}/{v2v_total} files only virt-v2v reads agree")
    assert cot_total > 200
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["glance__testserver-bad-ovf.ova", "cot__ersatz_ovf_3.0.ovf",
                                  "govmomi__virtualsystemcollection.ovf"])
def test_files_no_tool_accepts_give_one_clear_error(name: str) -> None:
    result = _load(name)
    assert isinstance(result, VMSubmitError)
    assert "\n" not in result.one_line() and name in result.one_line()


def test_every_corpus_file_gives_a_spec_or_a_clear_error() -> None:
    outcomes = Counter()
    for name in _descriptors():
        result = _load(name)  # anything but a VMSubmitError propagates and fails the test
        outcomes["spec" if isinstance(result, VMSpec) else type(result).__name__] += 1
    print(f"\nOVF corpus outcomes: {dict(outcomes)}")
    assert outcomes["spec"] > 250
