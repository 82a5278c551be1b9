"""translate/: the runner and stock VM universe targets on the shipped examples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from condor_vmsubmit import jobcontract
from condor_vmsubmit.classads import classad_string
from condor_vmsubmit.errors import InputError, TargetError
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.jobcontract import request_memory_mib
from condor_vmsubmit.spec import Disk, KernelBoot, Nic, VMSpec
from condor_vmsubmit.translate import TARGETS, TranslateOptions, translate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "libvirt"
OUT = "/srv/jobs/out"


@pytest.fixture(scope="module")
def web() -> VMSpec:
    return load(EXAMPLES / "webserver.xml")


@pytest.fixture(scope="module")
def kernel() -> VMSpec:
    return load(EXAMPLES / "kernel-boot.xml")


def runner(spec: VMSpec, **options) -> dict[str, str]:
    return dict(translate(spec, TranslateOptions(output_dir=OUT, **options)).commands)


def test_runner_job_shape(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(output_dir=OUT))
    commands = dict(description.commands)
    assert len(commands) == len(description.commands), "a command is emitted twice"
    assert commands["universe"] == "vanilla"
    assert commands["executable"] == jobcontract.DEFAULT_RUNNER
    assert commands["transfer_executable"] == "false"
    assert commands["initialdir"] == OUT
    assert commands["request_cpus"] == "4"
    assert commands["request_memory"] == str(request_memory_mib(4 * 1024**3))
    assert commands["checkpoint_exit_code"] == str(jobcontract.EXIT_CHECKPOINTED)
    # the writable disks go with every checkpoint (a saved state is consistent only with them), and
    # with every eviction (ON_EXIT_OR_EVICT uploads the output files); the read-only seed ISO does not
    travelling = (f"{jobcontract.CHECKPOINT_DIR}, {jobcontract.CONSOLE_LOG_FILE}, {jobcontract.SCREEN_DIR}, "
                  "web01-system.qcow2, web01-data.img")
    assert commands["transfer_checkpoint_files"] == travelling
    assert commands["when_to_transfer_output"] == "ON_EXIT_OR_EVICT"
    assert commands["transfer_output_files"] == travelling
    assert commands["want_graceful_removal"] == "true"  # a hold lets the runner save the guest
    interval = str(jobcontract.DEFAULT_CHECKPOINT_INTERVAL_SECONDS)
    assert commands[f"MY.{jobcontract.CHECKPOINT_INTERVAL_ATTR}"] == interval
    assert commands["want_io_proxy"] == "true"
    for code in jobcontract.HOLD_EXIT_CODES:
        assert str(code) in commands["on_exit_hold"]
    assert f"MY.{jobcontract.HOLD_REASON_ATTR}" in commands["on_exit_hold_reason"]
    assert description.text().endswith("\nqueue\n")


@pytest.mark.parametrize("guest_mib, request_mib", [
    (256, 538),    # 256 + 256 + 25.6, rounded up (examples/libvirt/kernel-boot.xml)
    (512, 820),    # examples/libvirt/minimal.xml
    (4096, 4762),  # examples/libvirt/webserver.xml, as docs/libvirt-frontend.md shows it
    (1, 258),      # 1 + 256 + 0.1, rounded up
])
def test_request_memory_adds_the_documented_overhead(web: VMSpec, guest_mib: int, request_mib: int) -> None:
    """The docs' figure: guest memory plus 256 MiB plus 10 %, in whole MiB rounded up."""
    assert request_memory_mib(guest_mib * 2**20) == request_mib
    description = translate(replace(web, memory_bytes=guest_mib * 2**20), TranslateOptions(output_dir=OUT))
    assert dict(description.commands)["request_memory"] == str(request_mib)
    assert any(f"request_memory is {request_mib} MiB: guest memory plus QEMU overhead (256 MiB + 10%)"
               in note.one_line() for note in description.notes)


def test_runner_transfers_spec_xml_and_disks(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(output_dir=OUT))
    assert description.input_files == (
        f"{OUT}/{jobcontract.SPEC_FILE}", f"{OUT}/{jobcontract.DOMAIN_XML_FILE}",
        "/var/lib/libvirt/images/web01-system.qcow2", "/var/lib/libvirt/images/web01-data.img",
        "/var/lib/libvirt/images/web01-seed.iso")
    assert dict(description.commands)["transfer_input_files"] == ",".join(description.input_files)
    spec_file, xml = description.job_files
    assert VMSpec.from_json(spec_file.text) == web
    assert xml.copy_of == str(EXAMPLES / "webserver.xml")


def test_no_transfer_disks_leaves_them_in_place(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(output_dir=OUT, transfer_disks=False))
    assert not any(path.startswith("/var/lib") for path in description.input_files)
    assert dict(description.commands)["MY.VM_ATTR_DISKS_TRANSFERRED"] == "false"
    assert sum("--no-transfer-disks" in note.message for note in description.notes) == 3


def test_kernel_boot_transfers_kernel_and_initrd(kernel: VMSpec) -> None:
    files = translate(kernel, TranslateOptions(output_dir=OUT)).input_files
    assert "/boot/vmlinuz" in files and "/srv/vm/initramfs.cpio.gz" in files


def test_relative_disk_paths_resolve_against_the_source(tmp_path: Path) -> None:
    xml = tmp_path / "vm.xml"
    xml.write_text("<domain type='qemu'><name>rel</name><memory>65536</memory><devices>"
                   "<disk type='file'><driver type='qcow2'/><source file='disks/a.qcow2'/>"
                   "<target dev='vda'/></disk></devices></domain>")
    files = translate(load(xml), TranslateOptions(output_dir=OUT)).input_files
    assert str(tmp_path / "disks" / "a.qcow2") in files


def test_vm_attributes_and_quoting(web: VMSpec) -> None:
    commands = runner(web)
    assert commands["MY.VM_TYPE"] == '"libvirt-managed"'
    assert commands["MY.VM_HYPERVISOR"] == '"kvm"'
    assert commands["MY.VM_ATTR_VCPUS"] == "4"
    assert commands["MY.VM_ATTR_MEMORY_MB"] == "4096"
    assert commands["MY.VM_ATTR_FIRMWARE"] == '"efi"'
    assert commands["MY.VM_ATTR_DISKS"] == "2"
    assert commands["MY.VM_ATTR_CDROMS"] == "1"
    assert commands["MY.VM_ATTR_NICS"] == "2"
    assert commands["MY.VM_ATTR_DISK_BUSES"] == '"sata,virtio"'
    assert commands["MY.VM_ATTR_NIC_MODELS"] == '"virtio"'
    assert commands["MY.VM_KVM_ATTR_CPU_MODE"] == '"host-model"'
    assert commands["MY.VM_KVM_ATTR_MACHINE"] == '"q35"'


def test_classad_strings_survive_classad2_and_submit() -> None:
    import classad2
    import htcondor2

    nasty = 'a "quoted" \\ name $(HOME) # not a comment'
    literal = classad_string(nasty)
    parsed = htcondor2.Submit(f"MY.X = {literal}\nqueue\n")
    expanded = parsed.expand("MY.X")
    assert classad2.ClassAd(f"[X = {expanded}]")["X"] == nasty


def test_hypervisor_override_and_any(web: VMSpec) -> None:
    assert runner(web, hypervisor="qemu")["MY.VM_HYPERVISOR"] == '"qemu"'
    anything = translate(web, TranslateOptions(output_dir=OUT, hypervisor="any"))
    commands = dict(anything.commands)
    assert commands["MY.VM_HYPERVISOR"] == '"any"'
    assert "VM_KVM_ATTR" not in anything.text()
    assert "stringListSize(TARGET.VM_HYPERVISORS) > 0" in commands["requirements"]
    assert any(n.source == "<os>" and n.level == "warning" for n in anything.notes), "efi unchecked for any"


def test_spec_file_carries_the_chosen_hypervisor(web: VMSpec) -> None:
    for chosen, in_spec in (("qemu", "qemu"), ("any", None)):
        staged = translate(web, TranslateOptions(output_dir=OUT, hypervisor=chosen)).job_files[0]
        assert VMSpec.from_json(staged.text) == replace(web, hypervisor=in_spec)


def test_unknown_hypervisor_is_script_managed(web: VMSpec) -> None:
    commands = runner(web, hypervisor="qemu-direct")
    assert commands["MY.VM_TYPE"] == '"script-managed"'
    assert "TARGET.VM_QEMU_DIRECT_ATTR_MAX_VCPUS" in commands["requirements"]


def test_requirements_scope_every_reference(web: VMSpec) -> None:
    import re

    requirements = runner(web)["requirements"]
    strings = re.sub(r'"[^"]*"', '""', requirements)
    names = re.findall(r"\b([A-Za-z_][A-Za-z0-9_.]*)\b(?!\s*\()", strings)
    bare = [n for n in names if "." not in n and n not in ("undefined", "true", "false")]
    assert bare == [], f"unscoped references: {bare}"


def test_vm_universe_target(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(output_dir=OUT, target="vm-universe"))
    commands = dict(description.commands)
    assert commands["universe"] == "vm"
    assert commands["vm_type"] == "kvm"
    assert commands["vm_memory"] == "4096"
    assert commands["vm_vcpus"] == "4"
    assert commands["vm_disk"] == ("web01-system.qcow2:vda:w:qcow2,web01-data.img:vdb:w:raw,"
                                   "web01-seed.iso:sda:r:raw")
    assert commands["vm_networking"] == "true"
    assert commands["vm_networking_type"] == "nat"
    assert commands["vm_macaddr"] == "52:54:00:6b:3c:01"
    assert (commands["input"], commands["output"], commands["error"]) == ("/dev/null",) * 3
    assert "requirements" not in commands and "MY.VM_TYPE" not in commands
    warned = {note.source for note in description.notes if note.level == "warning"}
    assert {"<disk> #3 (sda)", "<interface> #1", "<interface> #2", "<os>", "<vcpu>"} <= warned


def test_vm_universe_strict_refuses(web: VMSpec) -> None:
    with pytest.raises(TargetError) as raised:
        translate(web, TranslateOptions(output_dir=OUT, target="vm-universe", strict=True))
    assert raised.value.exit_code == 6
    assert "--strict" in raised.value.one_line() and "more" in raised.value.one_line()


def test_vm_universe_refuses_what_it_cannot_do_at_all(kernel: VMSpec) -> None:
    with pytest.raises(TargetError, match="at least one disk"):
        translate(kernel, TranslateOptions(output_dir=OUT, target="vm-universe"))


def test_vm_universe_qemu_and_shared_folders_are_warned(kernel: VMSpec) -> None:
    spec = replace(kernel, disks=(Disk(source="/img/a.raw", format="raw", target="vda"),))
    description = translate(spec, TranslateOptions(output_dir=OUT, target="vm-universe"))
    messages = " ".join(n.message for n in description.notes if n.level == "warning")
    assert "no plain QEMU" in messages and "shared folders" in messages and "kernel boot" in messages
    assert dict(description.commands)["vm_disk"] == "a.raw:vda:w:raw"


def test_strict_runner_accepts_a_plain_vm(web: VMSpec) -> None:
    """The runner target loses nothing of the example: --strict changes nothing."""
    relaxed = translate(web, TranslateOptions(output_dir=OUT))
    assert [note for note in relaxed.notes if note.level == "warning"] == []
    assert translate(web, TranslateOptions(output_dir=OUT, strict=True)) == relaxed


def test_append_replaces_or_adds(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(
        output_dir=OUT, append=(("request_memory", "9000"), ("MY.Project", '"vm"'))))
    commands = dict(description.commands)
    assert commands["request_memory"] == "9000" and commands["MY.Project"] == '"vm"'
    assert [k for k, _ in description.commands].count("request_memory") == 1


def test_batch_name_queue_and_extra_files(web: VMSpec) -> None:
    description = translate(web, TranslateOptions(output_dir=OUT, batch_name="run $1", queue=3,
                                                  extra_input_files=("/data/extra.bin",)))
    assert dict(description.commands)["batch_name"] == "run $(DOLLAR)1"
    assert "/data/extra.bin" in description.input_files
    assert description.text().endswith("\nqueue 3\n")


@pytest.mark.parametrize("target", TARGETS)
def test_same_file_name_twice_is_refused(web: VMSpec, target: str) -> None:
    spec = replace(web, disks=(Disk(source="/a/disk.img"), Disk(source="/b/disk.img")))
    with pytest.raises(InputError, match="share the name 'disk.img'"):
        translate(spec, TranslateOptions(output_dir=OUT, target=target))


def test_comma_in_a_path_is_refused(web: VMSpec) -> None:
    spec = replace(web, disks=(Disk(source="/a/b,c.img"),))
    with pytest.raises(InputError, match="contains ','"):
        translate(spec, TranslateOptions(output_dir=OUT))


def test_non_file_disks_are_warned_for_the_runner() -> None:
    spec = VMSpec(source_format="vmdk", name="n", vcpus=1, memory_bytes=2**30,
                  disks=(Disk(source="rbd://host/pool", source_type="network"),),
                  nics=(Nic(model="e1000"),), kernel_boot=KernelBoot(kernel="/k"))
    description = translate(spec, TranslateOptions(output_dir=OUT))
    assert any(n.level == "warning" and "network disk" in n.message for n in description.notes)
    with pytest.raises(TargetError):
        translate(spec, TranslateOptions(output_dir=OUT, strict=True))


def test_every_emitted_vm_attribute_is_documented(web: VMSpec, kernel: VMSpec) -> None:
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "attributes.md").read_text()
    emitted = set()
    for spec in (web, kernel, load(EXAMPLES / "minimal.xml")):
        for key, _ in translate(spec, TranslateOptions(output_dir=OUT)).commands:
            if key.startswith("MY.VM_"):
                emitted.add(key[3:])
    assert len(emitted) > 15
    for name in sorted(emitted):
        specific = re.fullmatch(r"VM_(?!ATTR_)[A-Z0-9_]+?_ATTR_([A-Z0-9_]+)", name)
        if specific:
            assert "`VM_<HV>_ATTR_<NAME>`" in doc and f"`{specific.group(1)}`" in doc, name
        else:
            assert f"`{name}`" in doc, f"{name} is not in docs/attributes.md"


def test_disks_left_on_the_execute_nodes_are_not_checkpointed(web: VMSpec) -> None:
    commands = runner(web, transfer_disks=False)
    assert commands["transfer_checkpoint_files"] == (f"{jobcontract.CHECKPOINT_DIR}, {jobcontract.CONSOLE_LOG_FILE}, "
                                                     f"{jobcontract.SCREEN_DIR}")


def test_the_checkpoint_interval_becomes_a_job_attribute_and_zero_warns(web: VMSpec) -> None:
    assert runner(web, checkpoint_interval=120)[f"MY.{jobcontract.CHECKPOINT_INTERVAL_ATTR}"] == "120"
    description = translate(web, TranslateOptions(output_dir=OUT, checkpoint_interval=0))
    assert dict(description.commands)[f"MY.{jobcontract.CHECKPOINT_INTERVAL_ATTR}"] == "0"
    assert [n.level for n in description.notes if n.source == "checkpoints"] == ["warning"]
    assert not [n for n in translate(web, TranslateOptions(output_dir=OUT)).notes if n.source == "checkpoints"]


def test_a_vmdk_disk_is_noted_as_converted_on_the_execute_node(web: VMSpec) -> None:
    vmdk = replace(web, disks=(replace(web.disks[0], format="vmdk", source="/images/system.vmdk"),))
    notes = [n.message for n in translate(vmdk, TranslateOptions(output_dir=OUT)).notes]
    assert any("converts it into qcow2" in message for message in notes), notes
    assert not any("converts it" in n.message for n in translate(web, TranslateOptions(output_dir=OUT)).notes)
