"""The safety rules on real domain XML, real images made by qemu-img, and the libvirt corpus."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from condor_vmsubmit.checks.safety import check_domain, pin_graphics_to_loopback
from condor_vmsubmit.xmlsafe import parse_bytes, parse_file

from conftest import CORPUS, expected

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    """A job sandbox holding a raw and a qcow2 disk, a kernel and an initrd."""
    box = tmp_path / "sandbox"
    box.mkdir()
    qemu_img("create", "-f", "qcow2", box / "disk.qcow2", "16M")
    qemu_img("create", "-f", "raw", box / "data.raw", "1M")
    (box / "vmlinuz").write_bytes(b"kernel")
    (box / "initrd.img").write_bytes(b"initrd")
    return box


def domain(box: Path, devices: str = "", *, os_extra: str = "", top: str = "") -> bytes:
    """A complete domain around ``devices``; ``{S}`` stands for the sandbox path."""
    text = f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>job</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{{S}}/vmlinuz</kernel>
    <initrd>{{S}}/initrd.img</initrd>
    {os_extra}
  </os>
  {top}
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{{S}}/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/></interface>
    <serial type='file'><source path='{{S}}/console.log'/><target port='0'/></serial>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    {devices}
  </devices>
</domain>"""
    return text.replace("{S}", str(box)).encode()


def refusals(box: Path, xml: bytes, **options) -> list[str]:
    return [str(r) for r in check_domain(parse_bytes(xml, "domain.xml"), box, **options)]


def test_a_plain_job_domain_passes(sandbox: Path) -> None:
    assert refusals(sandbox, domain(sandbox)) == []


@pytest.mark.parametrize("devices, top, element, reason", [
    ("", "<qemu:commandline><qemu:arg value='-device'/></qemu:commandline>",
     "/domain/qemu:commandline", "hypervisor pass-through"),
    ("", "<qemu:commandline><qemu:env name='X' value='1'/></qemu:commandline>",
     "/domain/qemu:commandline/qemu:env", "hypervisor pass-through"),
    ("<emulator>/usr/bin/evil</emulator>", "", "/domain/devices/emulator",
     "emulator '/usr/bin/evil' is not one of the host's QEMU system emulators"),
    ("", "<seclabel type='none'/>", "/domain/seclabel", "security labels"),
    ("<disk type='file' device='disk'><driver type='raw'/><source file='{S}/data.raw'>"
     "<seclabel model='dac' relabel='no'/></source><target dev='vdb'/></disk>", "",
     "/domain/devices/disk[2]/source/seclabel", "security labels"),
    ("<hostdev mode='subsystem' type='pci'><source><address bus='0x06' slot='0x12'/></source></hostdev>",
     "", "/domain/devices/hostdev", "host devices"),
    ("<redirdev bus='usb' type='spicevmc'/>", "", "/domain/devices/redirdev", "USB redirection"),
    ("", "<resource><partition>/machine</partition></resource>", "/domain/resource", "cgroup"),
    ("<shmem name='shared'><model type='ivshmem-plain'/></shmem>", "", "/domain/devices/shmem", "shared memory"),
    ("<input type='evdev'><source dev='/dev/input/event1'/></input>", "", "/domain/devices/input", "host input"),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "",
     "/domain/devices/tpm", "host's TPM"),
    ("<smartcard mode='host'/>", "", "/domain/devices/smartcard", "smartcard readers"),
    ("<audio id='1' type='pulseaudio'/>", "", "/domain/devices/audio", "sound system"),
    ("<rng model='virtio'><backend model='random'>/dev/hwrng</backend></rng>", "", "/domain/devices/rng",
     "random number source"),
    ("", "<on_crash>coredump-destroy</on_crash>", "/domain/on_crash", "crash dumps"),
    ("", "<sysinfo type='fwcfg'><entry name='opt/x' file='/etc/shadow'/></sysinfo>",
     "/domain/sysinfo/entry", "outside the job's sandbox"),
    ("<memory model='nvdimm'><source><path>/dev/pmem0</path></source><target><size unit='MiB'>16</size>"
     "</target></memory>", "", "/domain/devices/memory/source/path", "outside the job's sandbox"),
])
def test_dangerous_elements_are_refused(sandbox: Path, devices: str, top: str, element: str,
                                        reason: str) -> None:
    found = refusals(sandbox, domain(sandbox, devices, top=top))
    assert any(r.startswith(element + " (line") and reason in r for r in found), found


@pytest.mark.parametrize("disk_type, source", [
    ("block", "<source dev='/dev/sda'/>"),
    ("network", "<source protocol='nbd' name='x'><host name='example.org' port='10809'/></source>"),
    ("volume", "<source pool='default' volume='v'/>"),
    ("nvme", "<source type='pci' managed='yes' namespace='1'><address domain='0' bus='1' slot='0' "
             "function='0'/></source>"),
    ("vhostuser", "<source type='unix' path='{S}/vhost.sock'/>"),
])
def test_host_storage_disks_are_refused(sandbox: Path, disk_type: str, source: str) -> None:
    xml = domain(sandbox, f"<disk type='{disk_type}' device='disk'><driver name='qemu' type='raw'/>"
                          f"{source}<target dev='vdb' bus='virtio'/></disk>")
    assert any(f"disk type '{disk_type}'" in r for r in refusals(sandbox, xml))


def test_host_media_only_when_the_admin_allows(sandbox: Path) -> None:
    drive = "<disk type='block' device='cdrom'><driver type='raw'/><source dev='%s'/><target dev='hdc'/></disk>"
    xml = domain(sandbox, drive % "/dev/sr0")
    assert [r.split(": ", 1)[1] for r in refusals(sandbox, xml)] == [
        "the host's cdrom drive cannot be passed to a job's guest (an admin allows it with "
        "VMSUBMIT_ALLOW_HOST_MEDIA = true); send the image with --cdrom or --floppy"]
    assert refusals(sandbox, xml, allow_host_media=True) == []
    found = refusals(sandbox, domain(sandbox, drive % "/etc/shadow"), allow_host_media=True)
    assert [r.split(": ", 1)[1] for r in found] == ["a host cdrom drive must be a device under /dev, not '/etc/shadow'"]
    hard_disk = domain(sandbox, (drive % "/dev/sda").replace("'cdrom'", "'disk'"))
    assert any("disk type 'block'" in r for r in refusals(sandbox, hard_disk, allow_host_media=True))


def test_lun_disk_is_refused(sandbox: Path) -> None:
    xml = domain(sandbox, "<disk type='file' device='lun'><driver type='raw'/><source file='{S}/data.raw'/>"
                          "<target dev='sda' bus='scsi'/></disk>")
    assert any("device='lun'" in r for r in refusals(sandbox, xml))


@pytest.mark.parametrize("source, why", [
    ("/etc/passwd", "is outside the job's sandbox"),
    ("data.raw", "is not an absolute path"),
    ("{S}/../outside.raw", "is outside the job's sandbox"),
])
def test_disk_sources_must_lie_in_the_sandbox(sandbox: Path, source: str, why: str) -> None:
    xml = domain(sandbox, f"<disk type='file' device='disk'><driver type='raw'/><source file='{source}'/>"
                          "<target dev='vdb'/></disk>")
    found = refusals(sandbox, xml)
    assert any(r.startswith("/domain/devices/disk[2]/source") and why in r for r in found), found


def test_symlinks_out_of_the_sandbox_are_resolved(sandbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.raw"
    outside.write_bytes(b"\0" * 512)
    (sandbox / "innocent.raw").symlink_to(outside)
    xml = domain(sandbox, "<disk type='file' device='disk'><driver type='raw'/>"
                          "<source file='{S}/innocent.raw'/><target dev='vdb'/></disk>")
    found = refusals(sandbox, xml)
    assert any(f"resolves to {outside}" in r for r in found), found


def test_a_sandbox_reached_through_a_symlink_still_counts(sandbox: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(sandbox)
    assert refusals(alias, domain(alias)) == []


def test_filesystem_sources(sandbox: Path) -> None:
    (sandbox / "share").mkdir()
    inside = ("<filesystem type='mount' accessmode='mapped'><source dir='{S}/share'/>"
              "<target dir='/mnt/share'/></filesystem>")
    assert refusals(sandbox, domain(sandbox, inside)) == []
    outside = inside.replace("{S}/share", "/home")
    assert any("dir='/home' is outside" in r for r in refusals(sandbox, domain(sandbox, outside)))
    block = ("<filesystem type='block' accessmode='passthrough'><source dev='/dev/sda1'/>"
             "<target dir='/mnt'/></filesystem>")
    assert any("filesystem type 'block'" in r for r in refusals(sandbox, domain(sandbox, block)))
    binary = inside.replace("<source", "<driver type='virtiofs'/><binary path='{S}/virtiofsd'/><source")
    assert any("virtiofsd" in r for r in refusals(sandbox, domain(sandbox, binary)))


@pytest.mark.parametrize("kind, inner", [
    ("direct", "<source dev='eth0' mode='bridge'/>"),
    ("ethernet", "<target dev='tap0'/>"),
    ("vhostuser", "<source type='unix' path='/tmp/vhost.sock' mode='client'/>"),
    ("hostdev", "<source><address type='pci' bus='0x06' slot='0x02'/></source>"),
    ("vdpa", "<source dev='/dev/vhost-vdpa-0'/>"),
    ("mcast", "<source address='230.0.0.1' port='5558'/>"),
])
def test_host_network_interfaces_are_refused(sandbox: Path, kind: str, inner: str) -> None:
    xml = domain(sandbox, f"<interface type='{kind}'>{inner}</interface>")
    assert any(f"interface type '{kind}'" in r for r in refusals(sandbox, xml))


def test_networks_and_bridges_only_when_the_admin_allows(sandbox: Path) -> None:
    xml = domain(sandbox, "<interface type='network'><source network='default'/></interface>"
                          "<interface type='bridge'><source bridge='br0'/></interface>")
    found = refusals(sandbox, xml)
    assert any("network 'default' is not one the admin allows" in r for r in found)
    assert any("bridge 'br0' is not one the admin allows" in r for r in found)
    assert refusals(sandbox, xml, allowed_networks={"default", "br0"}) == []
    assert len(refusals(sandbox, xml, allowed_networks={"default"})) == 1


@pytest.mark.parametrize("inner, reason", [
    ("<script path='/etc/qemu-ifup'/>", "<script> would run a host program"),
    ("<backend type='passt'/><portForward proto='tcp'><range start='2022' to='22'/></portForward>",
     "listens on host ports"),
    ("<backend tap='/dev/net/tun' vhost='/dev/vhost-net'/>", "host devices"),
    ("<backend type='passt' logFile='/var/log/passt.log'/>", "logFile='/var/log/passt.log' is outside"),
    ("<mac address='01:00:5e:00:00:01'/>", "is multicast"),
    ("<mac address='52:54:00:zz:34:56'/>", "is malformed"),
    ("<mac address='52:54:00:12:34'/>", "is malformed"),
])
def test_user_interface_details(sandbox: Path, inner: str, reason: str) -> None:
    found = refusals(sandbox, domain(sandbox, f"<interface type='user'>{inner}</interface>"))
    assert any(reason in r for r in found), found


@pytest.mark.parametrize("device", ["serial", "console", "channel", "parallel"])
@pytest.mark.parametrize("kind, source", [
    ("file", "<source path='/tmp/out.log'/>"),
    ("unix", "<source mode='bind' path='/run/evil.sock'/>"),
    ("pipe", "<source path='/tmp/fifo'/>"),
    ("dev", "<source path='/dev/ttyS0'/>"),
])
def test_character_devices_outside_the_sandbox(sandbox: Path, device: str, kind: str, source: str) -> None:
    found = refusals(sandbox, domain(sandbox, f"<{device} type='{kind}'>{source}</{device}>"))
    assert any(f"/domain/devices/{device}" in r and "is outside the job's sandbox" in r for r in found), found
    inside = source.replace("='/", f"='{sandbox}/")
    assert refusals(sandbox, domain(sandbox, f"<{device} type='{kind}'>{inside}</{device}>")) == []


@pytest.mark.parametrize("kind, source", [
    ("tcp", "<source mode='bind' host='0.0.0.0' service='2445'/>"),
    ("udp", "<source mode='connect' host='10.0.0.1' service='2445'/>"),
    ("stdio", ""),
])
def test_network_character_devices_are_refused(sandbox: Path, kind: str, source: str) -> None:
    found = refusals(sandbox, domain(sandbox, f"<console type='{kind}'>{source}</console>"))
    assert any(f"character device type '{kind}'" in r for r in found), found


def test_character_device_log_files(sandbox: Path) -> None:
    xml = domain(sandbox, "<serial type='pty'><log file='/var/log/x.log'/></serial>")
    assert any("file='/var/log/x.log' is outside" in r for r in refusals(sandbox, xml))


@pytest.mark.parametrize("graphics, reason", [
    ("<graphics type='vnc' listen='0.0.0.0'/>", "listening on '0.0.0.0' reaches beyond loopback"),
    ("<graphics type='spice'><listen type='address' address='192.168.1.5'/></graphics>",
     "listening on '192.168.1.5'"),
    ("<graphics type='vnc' listen='127.0.0.1'><listen type='address' address='::'/></graphics>",
     "listening on '::'"),
    ("<graphics type='spice'><listen type='network' network='default'/></graphics>", "network 'default'"),
    ("<graphics type='vnc' autoport='yes'/>", "without a listen address"),
    ("<graphics type='spice' autoport='yes'><listen type='address'/></graphics>", "without a listen address"),
    ("<graphics type='vnc'><listen type='socket' socket='/tmp/vnc.sock'/></graphics>", "is outside"),
    ("<graphics type='sdl' display=':0' xauth='/root/.Xauthority'/>", "host's display"),
    ("<graphics type='egl-headless'><gl rendernode='/dev/dri/renderD128'/></graphics>", "host GPU"),
])
def test_graphics_must_stay_on_loopback(sandbox: Path, graphics: str, reason: str) -> None:
    found = refusals(sandbox, domain(sandbox, graphics))
    assert any(reason in r for r in found), found


def test_pinning_graphics_to_loopback_makes_them_acceptable(sandbox: Path) -> None:
    xml = domain(sandbox, "<graphics type='vnc' autoport='yes'/>"
                          "<graphics type='spice'><listen type='address'/></graphics>")
    root = parse_bytes(xml, "domain.xml")
    pinned = pin_graphics_to_loopback(root)
    assert check_domain(pinned, sandbox) == []
    assert len(check_domain(root, sandbox)) == 2  # the original is left alone
    assert [g.get("listen") for g in pinned.iter("graphics")] == ["127.0.0.1", "127.0.0.1", None]


@pytest.mark.parametrize("os_extra, what", [
    ("<loader type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>", "loader"),  # writable
    ("<loader readonly='yes' type='pflash'>/usr/share/../../etc/shadow</loader>", "loader"),
    ("<nvram>/var/lib/libvirt/qemu/nvram/x_VARS.fd</nvram>", "nvram"),
    ("<nvram template='/etc/evil.fd'>{S}/vars.fd</nvram>", "nvram"),
    ("<dtb>/boot/evil.dtb</dtb>", "dtb"),
])
def test_firmware_paths_outside_the_sandbox(sandbox: Path, os_extra: str, what: str) -> None:
    found = refusals(sandbox, domain(sandbox, os_extra=os_extra))
    assert any(r.startswith(f"/domain/os/{what}") and "is outside" in r for r in found), found


def test_the_hosts_own_emulator_and_firmware_are_not_custom(sandbox: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    firmware = next(Path("/usr/share").glob("OVMF/OVMF_CODE*.fd"), None)
    if qemu is None or firmware is None:
        pytest.skip("needs qemu-system-x86 and ovmf installed")
    xml = domain(sandbox, f"<emulator>{qemu}</emulator>",
                 os_extra=f"<loader readonly='yes' type='pflash'>{firmware}</loader>"
                          f"<nvram template='{firmware}'>{{S}}/vars.fd</nvram>")
    assert refusals(sandbox, xml) == []
    (sandbox / "qemu-system-x86_64").symlink_to("/bin/sh")
    disguised = domain(sandbox, "<emulator>{S}/qemu-system-x86_64</emulator>")
    assert [r.split(": ", 1)[1] for r in refusals(sandbox, disguised)] == [
        f"emulator '{sandbox}/qemu-system-x86_64' is not one of the host's QEMU system emulators; "
        "leave <emulator> out"]


def test_kernel_and_initrd_outside_the_sandbox(sandbox: Path) -> None:
    xml = domain(sandbox).replace(f"{sandbox}/vmlinuz".encode(), b"/boot/vmlinuz")
    xml = xml.replace(f"{sandbox}/initrd.img".encode(), b"/boot/initrd.img")
    found = refusals(sandbox, xml)
    assert sorted(r.split(" (")[0] for r in found) == ["/domain/os/initrd", "/domain/os/kernel"]


def test_missing_format_is_refused_never_probed(sandbox: Path) -> None:
    xml = domain(sandbox, "<disk type='file' device='cdrom'><source file='{S}/data.raw'/>"
                          "<target dev='hdc' bus='ide'/></disk>")
    assert any("disk format missing" in r for r in refusals(sandbox, xml))
    empty_drive = domain(sandbox, "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>")
    assert refusals(sandbox, empty_drive) == []


def test_uncheckable_formats_are_refused(sandbox: Path) -> None:
    qemu_img("create", "-f", "vpc", sandbox / "disk.vhd", "1M")
    xml = domain(sandbox, "<disk type='file'><driver type='vpc'/><source file='{S}/disk.vhd'/>"
                          "<target dev='vdb'/></disk>")
    assert any("format 'vpc' cannot be checked" in r for r in refusals(sandbox, xml))


def test_qcow2_with_a_backing_file_is_refused(sandbox: Path, tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", tmp_path / "base.qcow2", "16M")
    qemu_img("create", "-f", "qcow2", "-b", tmp_path / "base.qcow2", "-F", "qcow2", sandbox / "disk.qcow2")
    assert refusals(sandbox, domain(sandbox)) == [
        f"/domain/devices/disk (line 12): image disk.qcow2: backing file '{tmp_path / 'base.qcow2'}' is an "
        "absolute path; only files next to the image are used"]
    qemu_img("create", "-f", "qcow2", sandbox / "base.qcow2", "16M")
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", sandbox / "disk.qcow2")
    assert refusals(sandbox, domain(sandbox)) == [
        "/domain/devices/disk (line 12): image disk.qcow2 has a backing file 'base.qcow2'; send a flattened image "
        "(or submit with --allow-backing, which sends the parents too)"]


def test_a_backing_chain_the_user_declared_passes_when_it_is_all_in_the_sandbox(sandbox: Path) -> None:
    qemu_img("create", "-f", "vmdk", sandbox / "base.vmdk", "16M")
    qemu_img("create", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk", sandbox / "disk.qcow2")
    assert refusals(sandbox, domain(sandbox), declared_backing={"disk.qcow2"}) == []
    assert refusals(sandbox, domain(sandbox), declared_backing={"other.qcow2"}) != []


def test_a_declared_chain_leaving_the_sandbox_through_a_link_is_refused(sandbox: Path, tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", tmp_path / "elsewhere.qcow2", "16M")
    (sandbox / "base.qcow2").symlink_to(tmp_path / "elsewhere.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", sandbox / "disk.qcow2")
    found = refusals(sandbox, domain(sandbox), declared_backing={"disk.qcow2"})
    assert len(found) == 1 and "disk.qcow2" in found[0] and ("outside" in found[0] or "link" in found[0]), found


def test_qcow2_with_an_external_data_file_is_refused(sandbox: Path) -> None:
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={sandbox / 'data.bin'}", sandbox / "disk.qcow2", "1M")
    assert any("external file" in r and "data.bin" in r for r in refusals(sandbox, domain(sandbox)))


def test_a_raw_file_claimed_as_qcow2_is_refused(sandbox: Path) -> None:
    (sandbox / "disk.qcow2").write_bytes(b"\0" * 4096)
    assert refusals(sandbox, domain(sandbox)) == [
        "/domain/devices/disk (line 12): image disk.qcow2 is a raw image, not qcow2 as <driver type> says"]


def test_backing_store_in_the_xml_is_refused(sandbox: Path) -> None:
    xml = domain(sandbox, "<disk type='file'><driver type='raw'/><source file='{S}/data.raw'/>"
                          "<backingStore type='file'><format type='raw'/><source file='/etc/passwd'/>"
                          "</backingStore><target dev='vdb'/></disk>")
    found = refusals(sandbox, xml)
    assert any("backing store" in r for r in found) and any("'/etc/passwd' is outside" in r for r in found)


def test_vmdk_delta_and_escaping_extents_are_refused(sandbox: Path, tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", sandbox / "base.vmdk", "1M")
    qemu_img("create", "-f", "vmdk", "-b", sandbox / "base.vmdk", "-F", "vmdk", sandbox / "delta.vmdk")
    vmdk = "<disk type='file'><driver type='vmdk'/><source file='{S}/%s'/><target dev='vdb'/></disk>"
    assert refusals(sandbox, domain(sandbox, vmdk % "base.vmdk")) == []
    assert any("backing file" in r for r in refusals(sandbox, domain(sandbox, vmdk % "delta.vmdk")))
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", sandbox / "flat.vmdk", "1M")
    assert refusals(sandbox, domain(sandbox, vmdk % "flat.vmdk")) == []
    descriptor = (sandbox / "flat.vmdk").read_text()
    (sandbox / "flat.vmdk").write_text(descriptor.replace('"flat-flat.vmdk"', '"../../escape-flat.vmdk"'))
    found = refusals(sandbox, domain(sandbox, vmdk % "flat.vmdk"))
    assert any("extent '../../escape-flat.vmdk' escapes the image's folder" in r for r in found), found


def test_refusals_name_element_and_line(sandbox: Path) -> None:
    xml = domain(sandbox, "<hostdev mode='subsystem' type='usb'/>")
    (refusal,) = check_domain(parse_bytes(xml, "d.xml"), sandbox)
    assert (refusal.element, refusal.line) == ("/domain/devices/hostdev", 20)
    assert str(refusal) == "/domain/devices/hostdev (line 20): host devices cannot be passed to a job's guest"


def test_metadata_may_hold_anything(sandbox: Path) -> None:
    xml = domain(sandbox, top="<metadata><app:x xmlns:app='http://example.org/app'><seclabel/></app:x>"
                              "</metadata>")
    assert refusals(sandbox, xml) == []


def test_whole_libvirt_corpus(tmp_path: Path) -> None:
    """Every corpus file is checked without a crash.  Interfaces are refused exactly where libvirt's
    own parse (EXPECTED.json) says they reach the host; every host device, USB redirection,
    security label and pass-through element outside <metadata> is refused."""
    oracle = expected("libvirt")
    files = sorted((CORPUS / "libvirt").glob("*.xml"))
    for path in files:
        root = parse_file(path)
        found = check_domain(root, tmp_path)
        assert all(r.element.startswith("/domain") and r.reason for r in found), path
        reasons = [r.reason for r in found]
        facts = oracle.get(path.name, {})
        if facts.get("libvirt_accepts"):
            kinds = [interface["type"] for interface in facts["interfaces"]]
            assert sum("reaches the host network directly" in r for r in reasons) == sum(
                k not in ("user", "network", "bridge") for k in kinds), path
            assert sum("is not one the admin allows" in r for r in reasons) == sum(
                k in ("network", "bridge") for k in kinds), path
        for xpath, why in (("//hostdev", ("host devices cannot",)), ("//redirdev", ("USB redirection",)),
                           ("//seclabel", ("security labels",)),
                           ("//*[namespace-uri() != '']", ("pass-through", "foreign namespace"))):
            count = len(root.xpath(xpath + "[not(ancestor::metadata)]"))
            assert sum(any(w in r for w in why) for r in reasons) == count, (path, xpath)
    assert len(files) > 1500 and not os.listdir(tmp_path)
