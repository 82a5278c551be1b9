"""The spec's JSON form: its schema, the stable keys, and lossless round trips."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from condor_vmsubmit.errors import VMSubmitError
from condor_vmsubmit.formats import load as load_any
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import Disk, KernelBoot, Nic, SharedFolder, SpecVersionError, VMSpec

from conftest import REPO, corpus_folder

# The stable keys docs/design.md promises (section "The spec as JSON").
STABLE_KEYS = {"source_format", "name", "vcpus", "memory_bytes", "firmware", "disks", "nics", "warnings"}
STABLE_DISK_KEYS = {"device", "bus", "format", "source", "readonly", "capacity_bytes"}
STABLE_NIC_KEYS = {"model", "mac", "network", "link"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((REPO / "schemas" / "vmspec.schema.json").read_text())


@pytest.fixture(scope="module")
def validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def corpus_specs() -> list[VMSpec]:
    specs = []
    for path in sorted(corpus_folder("libvirt").glob("*.xml")):
        try:
            specs.append(load(path))
        except VMSubmitError:
            continue
    return specs


def json_form(spec: VMSpec) -> dict:
    """What travels with the job: the parsed text of :meth:`VMSpec.to_json`."""
    return json.loads(spec.to_json())


def sample_spec() -> VMSpec:
    return VMSpec(
        source_format="libvirt", name="web", vcpus=4, vcpus_current=2, memory_bytes=2 * 1024**3,
        firmware="efi", hypervisor="kvm", arch="x86_64", machine="q35",
        kernel_boot=KernelBoot(kernel="/boot/vmlinuz", initrd=None, cmdline="console=ttyS0"),
        disks=(Disk(device="disk", bus="virtio", format="qcow2", source="/v/root.qcow2", target="vda"),
               Disk(device="cdrom", bus="sata", format="raw", source=None, readonly=True, target="sda")),
        nics=(Nic(model="virtio", mac="52:54:00:12:34:56", network="default", network_kind="network"),
              Nic(model="e1000", link="down")),
        shared_folders=(SharedFolder(source="/srv/data", target="data", driver="virtiofs"),),
        extras={"os_type": "hvm"}, source_path="web.xml", warnings=("a warning",))


def test_schema_is_valid_draft_2020_12(schema: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_requires_the_stable_keys(schema: dict) -> None:
    assert set(schema["required"]) == STABLE_KEYS
    assert STABLE_DISK_KEYS <= set(schema["$defs"]["disk"]["required"])
    assert STABLE_NIC_KEYS <= set(schema["$defs"]["nic"]["required"])


def test_schema_describes_every_key_the_spec_writes(schema: dict) -> None:
    data = json_form(sample_spec())
    assert set(data) <= set(schema["properties"])
    assert set(data["disks"][0]) <= set(schema["$defs"]["disk"]["properties"])
    assert set(data["nics"][0]) <= set(schema["$defs"]["nic"]["properties"])
    assert set(data["shared_folders"][0]) <= set(schema["$defs"]["shared_folder"]["properties"])


def test_top_level_schemas_folder_is_the_packaged_one() -> None:
    packaged = resources.files("condor_vmsubmit") / "schemas" / "vmspec.schema.json"
    assert (REPO / "schemas").resolve() == (REPO / "condor_vmsubmit" / "schemas").resolve()
    assert packaged.read_text() == (REPO / "schemas" / "vmspec.schema.json").read_text()


def test_every_corpus_spec_validates_and_round_trips(corpus_specs: list[VMSpec],
                                                     validator: jsonschema.Draft202012Validator) -> None:
    assert len(corpus_specs) > 1400
    for spec in corpus_specs:
        text = spec.to_json()
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(json.loads(text))]
        assert not errors, f"{spec.source_path}: {errors}"
        assert VMSpec.from_json(text) == spec


@pytest.mark.parametrize("corpus", ["ovf", "vmdk"])
def test_specs_of_the_other_adapters_validate_and_round_trip(corpus: str,
                                                             validator: jsonschema.Draft202012Validator) -> None:
    """The schema is the contract for every adapter, not only libvirt's."""
    checked = 0
    for path in sorted(corpus_folder(corpus).iterdir()):
        if path.name in ("EXPECTED.json", "MANIFEST.tsv"):
            continue
        try:
            spec = load_any(path)
        except VMSubmitError:
            continue
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(json_form(spec))]
        assert not errors, f"{path.name}: {errors}"
        assert VMSpec.from_json(spec.to_json()) == spec, path.name
        checked += 1
    assert checked > 20


def test_sample_spec_validates_and_round_trips(validator: jsonschema.Draft202012Validator) -> None:
    spec = sample_spec()
    validator.validate(json_form(spec))
    assert VMSpec.from_json(spec.to_json()) == spec
    assert VMSpec.from_json(spec.to_json(indent=None)) == spec


@pytest.mark.parametrize("change", [
    {"firmware": "uefi"}, {"vcpus": 0}, {"memory_bytes": -1}, {"memory_bytes": 1.5},
    {"source_format": "vmx"}, {"nics": [{"model": None, "mac": "52:54:00:12:34:5G", "network": None, "link": "up"}]},
    {"nics": [{"model": None, "mac": None, "network": None, "link": "unplugged"}]},
    {"disks": [{"device": "tape", "bus": None, "format": None, "source": None, "readonly": False,
                "capacity_bytes": None}]},
])
def test_schema_refuses_broken_specs(change: dict, validator: jsonschema.Draft202012Validator) -> None:
    data = json_form(sample_spec()) | change
    assert not validator.is_valid(data)


@pytest.mark.parametrize("key", sorted(STABLE_KEYS))
def test_schema_refuses_a_spec_missing_a_stable_key(key: str, validator: jsonschema.Draft202012Validator) -> None:
    data = json_form(sample_spec())
    del data[key]
    assert not validator.is_valid(data)


def test_readers_ignore_keys_they_do_not_know(validator: jsonschema.Draft202012Validator) -> None:
    data = json_form(sample_spec()) | {"added_in_a_later_version": {"x": 1}}
    assert validator.is_valid(data)
    assert VMSpec.from_dict(data) == sample_spec()


def test_json_form_has_spec_version_and_plain_types() -> None:
    data = json.loads(sample_spec().to_json())
    assert data["spec_version"] == 1
    assert data["disks"][1] == {"device": "cdrom", "bus": "sata", "format": "raw", "source": None,
                                "source_type": "file", "readonly": True, "capacity_bytes": None,
                                "target": "sda", "backing": None}
    assert data["kernel_boot"] == {"kernel": "/boot/vmlinuz", "initrd": None, "cmdline": "console=ttyS0"}


@pytest.mark.parametrize("version, error", [
    (2, "spec_version 2 is newer than this condor_vmsubmit reads (1)"),
    ("1", "spec_version '1' is not a version of the VM spec"),
    (0, "spec_version 0 is not a version of the VM spec"),
])
def test_a_spec_version_this_code_does_not_read_is_refused(version: object, error: str) -> None:
    data = json_form(sample_spec()) | {"spec_version": version}
    with pytest.raises(SpecVersionError) as refused:
        VMSpec.from_dict(data)
    assert str(refused.value).startswith(error)
    assert VMSpec.from_dict(data | {"spec_version": 1}) == sample_spec()


def test_helpers() -> None:
    spec = sample_spec()
    assert [d.target for d in spec.disks_of("cdrom")] == ["sda"]
    assert spec.disks_of("floppy") == ()
    warned = spec.with_warning("another")
    assert warned.warnings == ("a warning", "another") and spec.warnings == ("a warning",)


def test_example_domains_validate(validator: jsonschema.Draft202012Validator) -> None:
    examples = sorted((REPO / "examples" / "libvirt").glob("*.xml"))
    assert examples, "examples/libvirt/ should hold example domains"
    for path in examples:
        validator.validate(json_form(load(Path(path))))
