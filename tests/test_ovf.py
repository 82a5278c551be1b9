"""The OVF adapter on real descriptors (COT, govmomi, virt-v2v test data) and small envelopes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from condor_vmsubmit.errors import InputError
from condor_vmsubmit.formats import load
from condor_vmsubmit.formats.ovf import open_appliance

from conftest import corpus_folder

MIB, GIB = 2**20, 2**30


def corpus(name: str) -> Path:
    return corpus_folder("ovf") / name


ENVELOPE = """<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References/>
  <VirtualSystem ovf:id="vm">
    <Info>x</Info>
    <VirtualHardwareSection>
      <Info>x</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        {units}<rasd:VirtualQuantity>{quantity}</rasd:VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


@pytest.mark.parametrize("units,quantity,expected", [
    ("byte * 2^20", "512", 512 * MIB),
    ("byte*1024*1024", "512", 512 * MIB),
    ("byte * 2 ^ 20", "512", 512 * MIB),
    ("MegaBytes", "512", 512 * MIB),
    ("GigaBytes", "2", 2 * GIB),
    ("byte*2^30", "2", 2 * GIB),
    ("byte * 10^6", "1000", 10**9),
    ("byte", "1073741824", GIB),
])
def test_memory_in_every_allocation_units_spelling(tmp_path: Path, units: str, quantity: str, expected: int) -> None:
    path = tmp_path / "m.ovf"
    path.write_text(ENVELOPE.format(units=f"<rasd:AllocationUnits>{units}</rasd:AllocationUnits>", quantity=quantity))
    spec = load(path)
    assert (spec.vcpus, spec.memory_bytes, spec.warnings) == (2, expected, ())


def test_memory_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.ovf"
    path.write_text(ENVELOPE.format(units="<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
                                    quantity="99999999999999999999999"))
    with pytest.raises(InputError, match="overflows 64 bits") as error:
        load(path)
    assert error.value.line == 11


def test_missing_memory_units_mean_mib_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "m.ovf"
    path.write_text(ENVELOPE.format(units="", quantity="512"))
    spec = load(path)
    assert spec.memory_bytes == 512 * MIB
    assert any("no AllocationUnits" in w for w in spec.warnings)


def test_unknown_units_are_an_error_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.ovf"
    path.write_text(ENVELOPE.format(units="<rasd:AllocationUnits>furlongs</rasd:AllocationUnits>", quantity="1"))
    with pytest.raises(InputError, match="furlongs") as error:
        load(path)
    assert error.value.line == 11


def test_cisco_csr1000v_default_profile_and_profiles() -> None:
    spec = load(corpus("cot__csr1000v.ovf"))
    assert (spec.vcpus, spec.memory_bytes) == (1, 4 * GIB)
    assert spec.extras["ovf_profile"] == "1CPU-4GB"
    assert spec.extras["product"] == "Cisco CSR 1000V Cloud Services Router"
    assert spec.extras["vendor"] == "Cisco Systems, Inc."
    assert [(d.device, d.bus) for d in spec.disks] == [("disk", "scsi"), ("cdrom", "ide"), ("cdrom", "ide")]
    assert spec.disks[0].capacity_bytes == GIB and spec.disks[0].format == "vmdk"
    assert spec.disks[0].source == "input.vmdk"
    assert [(n.model, n.network) for n in spec.nics] == [("virtio", f"GigabitEthernet{i}") for i in (1, 2, 3)]
    big = load(corpus("cot__csr1000v.ovf"), profile="4CPU-8GB")
    assert (big.vcpus, big.memory_bytes, big.extras["ovf_profile"]) == (4, 8 * GIB, "4CPU-8GB")
    with pytest.raises(InputError, match="no deployment profile 'huge'.*1CPU-4GB, 2CPU-4GB, 4CPU-4GB, 4CPU-8GB"):
        load(corpus("cot__csr1000v.ovf"), profile="huge")
    profiles = open_appliance(corpus("cot__csr1000v.ovf")).profiles
    assert [p.profile_id for p in profiles] == ["1CPU-4GB", "2CPU-4GB", "4CPU-4GB", "4CPU-8GB"]


def test_profile_specific_disks_and_the_declared_default() -> None:
    large = load(corpus("govmomi__deployment-configs.ovf"))
    assert large.extras["ovf_profile"] == "large"
    assert (large.vcpus, large.memory_bytes, len(large.disks_of("disk"))) == (8, 8 * GIB, 3)
    small = load(corpus("govmomi__deployment-configs.ovf"), profile="small")
    assert (small.vcpus, small.memory_bytes, len(small.disks_of("disk"))) == (2, 2 * GIB, 1)


def test_storage_controllers_floppy_and_empty_drives() -> None:
    spec = load(corpus("govmomi__configspec.ovf"))
    assert [(d.device, d.bus) for d in spec.disks] == [
        ("disk", "scsi"), ("cdrom", "ide"), ("floppy", "fdc"), ("disk", "scsi"),
        ("disk", "sata"), ("disk", "sata"), ("disk", "nvme")]
    assert spec.extras["eula"] == "yes"


def test_vmware_efi_firmware() -> None:
    assert load(corpus("govmomi__external__SimpleVm_with_vgpu.ovf")).firmware == "efi"
    assert load(corpus("cot__csr1000v.ovf")).firmware == "bios"


def test_virtualbox_efi_firmware(tmp_path: Path) -> None:
    with tarfile.open(corpus("glance__testserver.ova")) as tar:
        text = tar.extractfile("testserver.ovf").read().decode()  # type: ignore[union-attr]
    assert load(corpus("glance__testserver.ova")).firmware == "bios"
    path = tmp_path / "efi.ovf"
    path.write_text(text.replace('<Hardware version="2">', '<Hardware version="2"><Firmware type="EFI64"/>'))
    assert load(path).firmware == "efi"


def test_nic_mac_model_and_network() -> None:
    spec = load(corpus("govmomi__external__DeleteHDTestdata__IdeSas__IdeSas.ovf"))
    assert [(n.model, n.mac, n.network, n.link) for n in spec.nics] == [
        ("pcnet", "00:50:56:0e:00:fa", "VappNetworks", "up")]


def test_link_down_when_not_connected_at_power_on(tmp_path: Path) -> None:
    text = corpus("cot__vmware.ovf").read_text()
    first = text.index("<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>",
                       text.index("<rasd:ResourceType>10<") - 2000)
    path = tmp_path / "v.ovf"
    path.write_text(text[:first] + "<rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>"
                    + text[first + len("<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>"):])
    links = [n.link for n in load(path).nics]
    assert links.count("down") == 1 and links.count("up") == 3


def test_ovf_09_sections_and_content() -> None:
    spec = load(corpus("govmomi__external__OVFToolTemplates__OVF__xmltestfiles__AnnotationSection__Neg__"
                       "ann_sec_elsewhr.ovf"))
    assert spec.extras["ovf_version"] == "0.9"
    assert [(d.bus, d.capacity_bytes, d.format) for d in spec.disks] == [("scsi", 329197568, "vmdk")]
    assert spec.nics[0].network == "VM Network 1"
    assert spec.memory_bytes == 0 and any("no memory Item" in w for w in spec.warnings)


def test_ovf_2_storage_and_ethernet_port_items_in_a_collection(tmp_path: Path) -> None:
    # DSP0243 2.1.1 example 3 (govmomi), with its broken epasd namespace URI repaired
    text = corpus("govmomi__virtualsystemcollection.ovf").read_text().replace("cim2608 schema", "cim-schema")
    path = tmp_path / "vsc.ovf"
    path.write_text(text)
    with pytest.raises(InputError, match="2 systems \\(storage server, web-server\\); choose one with --system"):
        load(path)
    with pytest.raises(InputError, match="no VirtualSystem 'db'; this appliance has: storage server, web-server"):
        load(path, system="db")
    spec = load(path, system="web-server")
    assert spec.name == "Virtual Appliance Two" and spec.extras["ovf_version"] == "2.x"
    assert (spec.vcpus, spec.memory_bytes) == (1, GIB)
    assert [(n.mac, n.network) for n in spec.nics] == [("00:16:8b:db:00:5f", "VS Network")]
    assert len(spec.disks_of("disk")) == 1
    assert spec.extras["eula"] == "yes"


def test_eula_text_from_collection_and_system() -> None:
    path = corpus("govmomi__external__2011OVFs__StudioVappEulaVmEulaOvf__StudioVappEulaVmEulaOvf.ovf")
    appliance = open_appliance(path, system="ubuntu8.04")
    # the collection's two licences, then the chosen system's own two (the other system's are not shown)
    assert appliance.product().eulas == ("vAppEULA1 is this.", "vAppEULA2 is this.", "EULA 1", "EULA 2")


def test_properties_are_typed_and_checked() -> None:
    path = corpus("govmomi__configspec.ovf")
    spec = load(path, properties={"loadbalance.dataplane_port": "6000"})
    assert json.loads(spec.extras["ovf_properties"])["loadbalance.dataplane_port"] == "6000"
    assert "appliance.root_pwd" not in json.loads(spec.extras["ovf_properties"])
    with pytest.raises(InputError, match="above the maximum 65535"):
        load(path, properties={"loadbalance.dataplane_port": "70000"})
    with pytest.raises(InputError, match="not a int number"):
        load(path, properties={"loadbalance.dataplane_port": "http"})
    with pytest.raises(InputError, match="no such property"):
        load(path, properties={"nope": "1"})
    with pytest.raises(InputError, match="not user-configurable"):
        load(path, properties={"BUILD_DATE": "today"})


def test_property_values_can_depend_on_the_profile() -> None:
    small = json.loads(load(corpus("govmomi__deployment-configs.ovf"), profile="small").extras["ovf_properties"])
    large = json.loads(load(corpus("govmomi__deployment-configs.ovf")).extras["ovf_properties"])
    assert small["tier_small"] == "small" and "tier_large" not in small
    assert large["tier_large"] == "large" and "tier_small" not in large


def test_disk_capacity_from_a_property() -> None:
    spec = load(corpus("govmomi__multiple_disks.ovf"))
    values = json.loads(spec.extras["ovf_properties"])
    scratch = [d for d in spec.disks_of("disk") if d.source is None]
    assert scratch and scratch[0].capacity_bytes == int(values["scratch_space_size_large"]) * GIB


def test_virt_v2v_ovirt_output_with_a_trailing_slash_namespace() -> None:
    spec = load(corpus("virt-v2v__test-o-ovirt.expected.ovf"))
    assert spec.extras["ovf_version"]


def test_not_ovf_and_unknown_namespaces_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="envelope/3' is not OVF 0.9, 1.x or 2.x"):
        load(corpus("cot__ersatz_ovf_3.0.ovf"))
    (tmp_path / "d.ovf").write_text("<domain type='kvm'/>")
    with pytest.raises(InputError, match="not an OVF <Envelope>"):
        load(tmp_path / "d.ovf", "ovf")


def test_validate_reports_violations_with_line_numbers(tmp_path: Path) -> None:
    load(corpus("cot__csr1000v.ovf"), validate=True)
    text = corpus("cot__csr1000v.ovf").read_text()
    broken = text.replace("<ovf:References>", "<ovf:References><ovf:Bogus/>", 1)
    path = tmp_path / "b.ovf"
    path.write_text(broken)
    with pytest.raises(InputError, match="not valid against ovf-envelope.xsd") as error:
        load(path, validate=True)
    assert error.value.line == broken[: broken.index("<ovf:Bogus/>")].count("\n") + 1
