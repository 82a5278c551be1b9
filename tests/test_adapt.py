"""What a batch job drops or rewrites of a desktop's domain XML, and what still reaches the safety check."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from condor_vmsubmit.checks.safety import check_domain
from condor_vmsubmit.domain.render import replay_domain
from condor_vmsubmit.domain.sandbox import Sandbox

# As `virsh dumpxml` of a running domain on a host with cgroups and the DAC driver writes it.
RUNNING = """<domain type='kvm' id='3'>
  <name>web</name>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>1</vcpu>
  <resource><partition>/machine</partition></resource>
  <os firmware='efi'><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/vm/web.img' index='1'/>
      <target dev='sda' bus='scsi'/><alias name='scsi0-0-0-0'/></disk>
    <controller type='scsi' index='0' model='lsilogic'><alias name='scsi0'/></controller>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-web/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/><alias name='channel0'/>
    </channel>
    <channel type='pty'><source path='/dev/pts/4'/><target type='virtio' name='org.example.0'/></channel>
    <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'/>
    <sound model='ich9'><alias name='sound0'/></sound>
    <audio id='1' type='none'/>
    <input type='tablet' bus='usb'><alias name='input0'/></input>
    <redirdev bus='usb' type='spicevmc'><alias name='redir0'/></redirdev>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0x5678'/></source></hostdev>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64055</label></seclabel>
  <seclabel type='static' model='selinux' relabel='no'><label>system_u:system_r:svirt_t:s0:c1</label></seclabel>
</domain>"""


def test_runtime_state_is_dropped_and_what_reaches_the_host_is_still_refused(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    (tmp_path / "web.img").write_bytes(b"\0" * 512)
    root, notes = replay_domain(etree.fromstring(RUNNING), sandbox, domain_type="qemu", job_id="t#1.0#1")
    text = etree.tostring(root, encoding="unicode")
    assert root.get("id") is None
    for gone in ("<resource", "/var/lib/libvirt", "/dev/pts/", "state=", "<alias", "<sound", "<audio",
                 "tablet", "spicevmc", "5901", "type=\"dynamic\""):
        assert gone not in text, gone
    assert root.find("cpu").get("mode") == "maximum"
    assert root.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert root.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert root.find("devices/graphics").get("autoport") == "yes"
    for element in ("<redirdev type='spicevmc'>", "<sound model='ich9'>", "<input type='tablet'>", "<alias>",
                    "<seclabel type='dynamic' model='dac'>", "<resource>", "<cpu mode='host-passthrough'>",
                    "<controller type='scsi' model='lsilogic'>", "<nvram>", "<channel type='unix'>",
                    "<graphics type='vnc'>"):
        assert any(note.startswith(element) for note in notes), (element, notes)
    refused = {refusal.element for refusal in check_domain(root, tmp_path)}
    assert refused == {"/domain/devices/hostdev", "/domain/seclabel"}


def test_with_kvm_the_cpu_and_a_user_socket_in_the_sandbox_stay(tmp_path: Path) -> None:
    xml = RUNNING.replace("/var/lib/libvirt/qemu/channel/target/domain-3-web", str(tmp_path))
    root, notes = replay_domain(etree.fromstring(xml), Sandbox(tmp_path), domain_type="kvm", job_id="t#1.0#1")
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("devices/channel/source").get("path") == f"{tmp_path}/org.qemu.guest_agent.0"
    assert not [note for note in notes if note.startswith(("<cpu", "<channel"))]


def test_a_running_domains_resolved_firmware_keeps_its_loader(tmp_path: Path) -> None:
    xml = RUNNING.replace("<os firmware='efi'>", "<os><firmware><feature enabled='no' name='secure-boot'/></firmware>"
                          "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>")
    root, notes = replay_domain(etree.fromstring(xml), Sandbox(tmp_path), domain_type="qemu", job_id="t#1.0#1")
    assert root.find("os/firmware") is None
    assert root.findtext("os/loader") == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    assert "<os><firmware>: dropped; it chose the <loader> the domain names" in notes
