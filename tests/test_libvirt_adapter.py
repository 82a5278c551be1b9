"""The libvirt adapter on small domains, with libvirt's own parser (test driver) as the
oracle wherever libvirt fills in a default."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from condor_vmsubmit.errors import InputError
from condor_vmsubmit.formats.libvirt import load
from condor_vmsubmit.spec import Disk, KernelBoot, Nic, SharedFolder

libvirt = pytest.importorskip("libvirt")


def domain(devices: str = "", *, head: str = "", os: str = "<os><type>hvm</type></os>",
           vcpu: str = "<vcpu>1</vcpu>", kind: str = "kvm") -> str:
    return (f"<domain type='{kind}'>\n  <name>t</name>\n  <memory unit='MiB'>64</memory>\n  {vcpu}\n"
            f"  {head}\n  {os}\n  <devices>\n{devices}\n  </devices>\n</domain>\n")


def disk(target: str, bus: str | None = None, device: str = "disk") -> str:
    bus_attr = f" bus='{bus}'" if bus else ""
    return (f"<disk type='file' device='{device}'><source file='/i/{target}.img'/>"
            f"<target dev='{target}'{bus_attr}/></disk>")


@pytest.fixture(scope="module")
def libvirt_view():
    """A function: libvirt's normalised XML (test driver, inactive) of a domain."""
    libvirt.registerErrorHandler(lambda *_: None, None)
    connection = libvirt.open("test:///default")

    def view(xml: str) -> etree._Element:
        defined = connection.defineXML(xml)
        try:
            return etree.fromstring(defined.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        finally:
            defined.undefine()

    yield view
    connection.close()


@pytest.fixture
def read(tmp_path: Path):
    """A function: write XML to a file and load it."""

    def read_xml(xml: str):
        path = tmp_path / "domain.xml"
        path.write_text(xml)
        return load(path)

    return read_xml


def test_disk_bus_from_target_prefix_like_libvirt(read, libvirt_view) -> None:
    devices = "\n".join([disk("hda"), disk("sdb"), disk("vdc"), disk("xvdd"), disk("fda", device="floppy"),
                         disk("hdb", device="cdrom"), disk("sdc", bus="usb"), disk("vdd", bus="sata")])
    xml = domain(devices)
    libvirt_buses = {d.find("target").get("dev"): d.find("target").get("bus")
                     for d in libvirt_view(xml).iterfind("devices/disk")}
    ours = {d.target: d.bus for d in read(xml).disks}
    assert ours == libvirt_buses
    assert ours["xvdd"] == "xen" and ours["fda"] == "fdc" and ours["sdc"] == "usb"


def test_disks_in_libvirt_order(read, libvirt_view) -> None:
    # Written out of order, some with and some without a bus: libvirt sorts within a bus as written.
    devices = "\n".join([disk("vdb", "virtio"), disk("hdb", "ide"), disk("hda"), disk("vda", "virtio"),
                         disk("hdc", "ide"), disk("fdb", device="floppy"), disk("fda", device="floppy"),
                         disk("sdb"), disk("sda", "scsi")])
    xml = domain(devices)
    libvirt_order = [d.find("target").get("dev") for d in libvirt_view(xml).iterfind("devices/disk")]
    assert [d.target for d in read(xml).disks] == libvirt_order
    assert libvirt_order[:2] == ["vda", "vdb"]


def test_every_disk_source_type(read) -> None:
    devices = """
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/v/a.qcow2'/>
      <backingStore type='file'><format type='raw'/><source file='/v/base.raw'/></backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sda' bus='scsi'/></disk>
    <disk type='dir' device='disk'><source dir='/srv/fat'/><target dev='hda' bus='ide'/><readonly/></disk>
    <disk type='network' device='disk'><source protocol='nbd' name='export'><host name='nbd.example' port='10809'/>
      </source><target dev='vdb' bus='virtio'/></disk>
    <disk type='volume' device='disk'><source pool='default' volume='vol1'/><target dev='vdc' bus='virtio'/></disk>
    <disk type='nvme' device='disk'><source type='pci' managed='yes' namespace='2'>
      <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source><target dev='vdd' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    <disk type='block' device='floppy'><target dev='fda'/></disk>
    """
    disks = {d.target: d for d in read(domain(devices)).disks}
    assert disks["vda"] == Disk(device="disk", bus="virtio", format="qcow2", source="/v/a.qcow2", target="vda",
                                backing="/v/base.raw")
    assert (disks["sda"].device, disks["sda"].source_type, disks["sda"].source) == ("lun", "block", "/dev/sdz")
    assert (disks["hda"].source_type, disks["hda"].source, disks["hda"].readonly) == ("dir", "/srv/fat", True)
    assert disks["vdb"].source == "nbd://nbd.example:10809/export"
    assert disks["vdc"].source == "default/vol1"
    assert disks["vdd"].source == "nvme://0x0000:0x01:0x00:0x0/2"
    # Empty removable drives: no source, and libvirt keeps them as type='file'.
    assert (disks["hdc"].device, disks["hdc"].source, disks["hdc"].source_type) == ("cdrom", None, "file")
    assert (disks["fda"].source, disks["fda"].source_type, disks["fda"].bus) == (None, "file", "fdc")


def test_interfaces(read, libvirt_view) -> None:
    devices = """
    <interface type='network'><mac address='52:54:00:AA:BB:01'/><source network='default'/>
      <model type='ViRtIo'/></interface>
    <interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br0'/>
      <model type='e1000e'/><link state='down'/></interface>
    <interface type='user'><link state='up'/></interface>
    """
    xml = domain(devices)
    assert read(xml).nics == (
        Nic(model="virtio", mac="52:54:00:aa:bb:01", network="default", network_kind="network", link="up"),
        Nic(model="e1000e", mac="52:54:00:aa:bb:02", network="br0", network_kind="bridge", link="down"),
        Nic(model=None, mac=None, network=None, network_kind="user", link="up"),
    )
    libvirt_models = [i.find("model").get("type") for i in libvirt_view(xml).iterfind("devices/interface")
                      if i.find("model") is not None]
    assert libvirt_models == ["virtio", "e1000e"]


def test_shared_folders(read) -> None:
    devices = """
    <filesystem type='mount' accessmode='mapped'><source dir='/srv/in'/><target dir='input'/><readonly/>
    </filesystem>
    <filesystem type='mount'><driver type='virtiofs'/><source dir='/srv/out'/><target dir='output'/></filesystem>
    <filesystem type='mount'><driver type='path'/><source dir='/srv/p'/><target dir='p'/></filesystem>
    """
    assert read(domain(devices)).shared_folders == (
        SharedFolder(source="/srv/in", target="input", driver=None, readonly=True),
        SharedFolder(source="/srv/out", target="output", driver="virtiofs"),
        SharedFolder(source="/srv/p", target="p", driver="9p"),
    )


@pytest.mark.parametrize("os, firmware", [
    ("<os firmware='efi'><type>hvm</type></os>", "efi"),
    ("<os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>", "efi"),
    ("<os><type>hvm</type><loader type='rom'>/usr/share/seabios/bios.bin</loader></os>", "bios"),
    ("<os firmware='bios'><type>hvm</type></os>", "bios"),
    ("<os><type>hvm</type></os>", "bios"),
])
def test_firmware(read, os: str, firmware: str) -> None:
    assert read(domain(os=os)).firmware == firmware


@pytest.mark.parametrize("vcpu, maximum, current", [
    ("<vcpu>4</vcpu>", 4, None),
    ("<vcpu current='2'>4</vcpu>", 4, 2),
    ("<vcpu current='4'>4</vcpu>", 4, None),
    ("", 1, None),
    ("<vcpu>3</vcpu><vcpus><vcpu id='0' enabled='yes'/><vcpu id='1' enabled='no'/>"
     "<vcpu id='2' enabled='yes'/></vcpus>", 3, 2),
])
def test_vcpus_like_libvirt(read, libvirt_view, vcpu: str, maximum: int, current: int | None) -> None:
    spec = read(domain(vcpu=vcpu))
    assert (spec.vcpus, spec.vcpus_current) == (maximum, current)
    libvirt_vcpu = libvirt_view(domain(vcpu=vcpu)).find("vcpu")
    assert int(libvirt_vcpu.text) == maximum
    assert int(libvirt_vcpu.get("current", libvirt_vcpu.text)) == (current or maximum)


def test_kernel_boot_consoles_and_extras(read) -> None:
    os = ("<os><type arch='x86_64' machine='pc'>hvm</type><kernel>/boot/vmlinuz</kernel>"
          "<initrd>/boot/initrd.img</initrd><cmdline>console=ttyS0 panic=-1</cmdline></os>")
    head = "<cpu mode='custom'><model>Skylake-Client</model></cpu>"
    devices = ("<serial type='pty'><target type='isa-serial' port='0'/></serial>"
               "<console type='pty'><target type='serial' port='0'/></console>")
    spec = read(domain(devices, os=os, head=head, kind="qemu"))
    assert spec.kernel_boot == KernelBoot(kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
                                          cmdline="console=ttyS0 panic=-1")
    assert [(c.kind, c.target) for c in spec.consoles] == [("serial", "isa-serial"), ("console", "serial")]
    assert (spec.hypervisor, spec.arch, spec.machine) == ("qemu", "x86_64", "pc")
    assert spec.extras == {"os_type": "hvm", "cpu_mode": "custom", "cpu_model": "Skylake-Client"}


def test_missing_name_uses_file_name_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "nameless.xml"
    path.write_text(domain().replace("<name>t</name>", ""))
    spec = load(path)
    assert spec.name == "nameless"
    assert spec.warnings == ("<name> missing; using 'nameless'",)


@pytest.mark.parametrize("xml, line, message", [
    ("<network>\n<name>n</name>\n</network>\n", 1, "root element is <network>, expected a libvirt <domain>"),
    (domain(vcpu="<vcpu>0</vcpu>"), 4, "<vcpu>: '0' is not a positive whole number"),
    (domain(vcpu="<vcpu current='x'>2</vcpu>"), 4, "<vcpu>: 'x' is not a positive whole number"),
    (domain(vcpu="<vcpu>²</vcpu>"), 4, "<vcpu>: '²' is not a positive whole number"),
    (domain(vcpu="<vcpu>4294967296</vcpu>"), 4, "<vcpu>: 4294967296 is more than libvirt accepts (4294967295)"),
    (domain("<disk type='file' device='tape'><target dev='st0'/></disk>"), 8,
     "<disk device='tape'> is not disk, cdrom, floppy or lun"),
    (domain().replace("<memory unit='MiB'>64</memory>", ""), 1,
     "no guest memory: give <memory> or NUMA cells with memory"),
])
def test_errors_name_file_and_line(tmp_path: Path, xml: str, line: int, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(xml)
    with pytest.raises(InputError) as caught:
        load(path)
    assert caught.value.one_line() == f"{path}:{line}: {message}"


def test_hotplug_memory_devices_add_to_numa_memory(read) -> None:
    head = "<maxMemory slots='4' unit='GiB'>8</maxMemory><cpu><numa><cell id='0' cpus='0' memory='1' unit='GiB'/>" \
           "</numa></cpu>"
    devices = "<memory model='dimm'><target><size unit='MiB'>512</size><node>0</node></target></memory>"
    xml = domain(devices, head=head).replace("<memory unit='MiB'>64</memory>", "")
    assert read(xml).memory_bytes == (1024 + 512) * 1024**2


@pytest.mark.parametrize("address", ["52:54:0:a:b:1", "52:54:00:0A:0B:01 ", "52:54:00:0a:0b:01"])
def test_mac_addresses_are_written_as_libvirt_writes_them(read, libvirt_view, address: str) -> None:
    xml = domain(f"<interface type='user'><mac address='{address}'/></interface>")
    libvirt_mac = libvirt_view(xml).find("devices/interface/mac").get("address")
    assert read(xml).nics[0].mac == libvirt_mac == "52:54:00:0a:0b:01"


@pytest.mark.parametrize("address", ["52:54:00:0a:0b", "x", " 52:54:00:0a:0b:01", "52:54:00:0a:0b:01x", "",
                                     "52:54:00:12:34:5g", "52:54:00:12:34:56:78"])
def test_malformed_macs_are_left_unset_with_a_warning(tmp_path: Path, address: str) -> None:
    """libvirt refuses them; the runner's safety check refuses the XML, the spec says why."""
    path = tmp_path / "mac.xml"
    path.write_text(domain(f"<interface type='user'>\n<mac address='{address}'/></interface>"))
    spec = load(path)
    assert spec.nics[0].mac is None
    assert spec.warnings == (f"line 9: <mac address='{address}'> is not a MAC address; libvirt refuses it "
                             "(the spec leaves this NIC's MAC unset)",)
    connection = libvirt.open("test:///default")
    with pytest.raises(libvirt.libvirtError):
        connection.defineXML(path.read_text())
    connection.close()


def test_multicast_mac_is_read_with_a_warning(read) -> None:
    spec = read(domain("<interface type='user'><mac address='01:00:5E:AA:BB:CD'/></interface>"))
    assert spec.nics[0].mac == "01:00:5e:aa:bb:cd"
    assert spec.warnings == ("NIC MAC 01:00:5e:aa:bb:cd is a multicast address; libvirt refuses it for a NIC",)
