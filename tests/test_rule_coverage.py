"""Every rule and every advertised attribute has a test case, or this file fails.

* Safety: every entry of the rule tables (the element rules, the path attributes, the path texts
  and the ``<source>`` path attributes) has a domain here that the rule refuses, at the element it
  is about.  A rule added to a table without a case here fails
  ``test_every_safety_rule_has_a_case``.
* Discovery: every attribute in ``NODE_ATTRIBUTES`` and ``HYPERVISOR_FACTS`` has a case here that
  shows its value following what discovery observed (``build_ad`` on made-up observations).  An
  attribute added without a case fails ``test_every_advertised_attribute_has_a_case``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from condor_vmsubmit import __version__
from condor_vmsubmit.attributes import HYPERVISOR_FACTS, NODE_ATTRIBUTES
from condor_vmsubmit.checks import knobs, safety
from condor_vmsubmit.config import digest
from condor_vmsubmit.discover.ad import (
    LibvirtAnswer,
    Observations,
    ScriptAnswer,
    Verified,
    build_ad,
)
from condor_vmsubmit.kvmprobe import ProbeResult

from test_safety import domain, refusals, sandbox  # noqa: F401 - sandbox is a fixture

OUT = "/srv/outside"  # a host folder outside every sandbox

# --- safety ---------------------------------------------------------------------------------------

# One refused case per entry of each rule table: (devices, os_extra, top) of test_safety.domain, and
# the element the refusal must name.
ELEMENT_RULES: dict[str, tuple[str, str, str, str]] = {
    "emulator": ("<emulator>/usr/bin/evil</emulator>", "", "", "/domain/devices/emulator"),
    "bootloader": ("", "", "<bootloader>/usr/bin/pygrub</bootloader>", "/domain/bootloader"),
    "seclabel": ("", "", "<seclabel type='none'/>", "/domain/seclabel"),
    "resource": ("", "", "<resource><partition>/machine</partition></resource>", "/domain/resource"),
    "hostdev": ("<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/></source></hostdev>", "", "",
                "/domain/devices/hostdev"),
    "redirdev": ("<redirdev bus='usb' type='spicevmc'/>", "", "", "/domain/devices/redirdev"),
    "shmem": ("<shmem name='ivshmem'><model type='ivshmem-plain'/></shmem>", "", "", "/domain/devices/shmem"),
    "mirror": ("<disk type='file' device='disk'><driver type='raw'/><source file='{S}/data.raw'/>"
               "<mirror type='file' file='{S}/copy.raw' format='raw'/><target dev='vdb'/></disk>", "", "",
               "/domain/devices/disk[2]/mirror"),
    "dataStore": ("<disk type='file' device='disk'><driver type='qcow2'/><source file='{S}/disk.qcow2'>"
                  "<dataStore type='file'><format type='raw'/><source file='{S}/data.raw'/></dataStore>"
                  "</source><target dev='vdb'/></disk>", "", "", "/domain/devices/disk[2]/source/dataStore"),
    "backingStore": ("<disk type='file' device='disk'><driver type='qcow2'/><source file='{S}/disk.qcow2'/>"
                     "<backingStore type='file'><format type='raw'/><source file='{S}/data.raw'/>"
                     "</backingStore><target dev='vdb'/></disk>", "", "", "/domain/devices/disk[2]/backingStore"),
    "disk": ("<disk type='block' device='disk'><driver type='raw'/><source dev='/dev/sda'/><target dev='vdb'/>"
             "</disk>", "", "", "/domain/devices/disk[2]"),
    "filesystem": ("<filesystem type='block'><source dev='/dev/sda1'/><target dir='x'/></filesystem>", "", "",
                   "/domain/devices/filesystem"),
    "interface": ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>", "", "",
                  "/domain/devices/interface[2]"),
    "serial": ("<serial type='tcp'><source mode='bind' host='0.0.0.0' service='2445'/></serial>", "", "",
               "/domain/devices/serial[2]"),
    "parallel": ("<parallel type='udp'><source mode='connect' host='10.0.0.1' service='9'/></parallel>", "", "",
                 "/domain/devices/parallel"),
    "console": ("<console type='stdio'/>", "", "", "/domain/devices/console"),
    "channel": ("<channel type='dbus'><target type='virtio' name='x'/></channel>", "", "",
                "/domain/devices/channel"),
    "graphics": ("<graphics type='vnc' listen='0.0.0.0'/>", "", "", "/domain/devices/graphics[2]"),
    "input": ("<input type='evdev'><source dev='/dev/input/event0'/></input>", "", "", "/domain/devices/input"),
    "tpm": ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "",
            "", "/domain/devices/tpm"),
    "smartcard": ("<smartcard mode='host'/>", "", "", "/domain/devices/smartcard"),
    "rng": ("<rng model='virtio'><backend model='random'>/dev/hwrng</backend></rng>", "", "",
            "/domain/devices/rng"),
    "audio": ("<audio id='1' type='pulseaudio'/>", "", "", "/domain/devices/audio"),
    "gl": ("<graphics type='egl-headless'><gl rendernode='/dev/dri/renderD128'/></graphics>", "", "",
           "/domain/devices/graphics[2]/gl"),
    "acceleration": ("<video><model type='virtio'><acceleration accel3d='yes' rendernode='/dev/dri/renderD128'/>"
                     "</model></video>", "", "", "/domain/devices/video/model/acceleration"),
    "on_crash": ("", "", "<on_crash>coredump-destroy</on_crash>", "/domain/on_crash"),
}

# (element, attribute) naming a host path: a case with the path outside the sandbox.
PATH_ATTRIBUTES: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("log", "file"): (f"<serial type='pty'><log file='{OUT}/x.log'/></serial>", "", "",
                      "/domain/devices/serial[2]/log"),
    ("nvram", "template"): ("", f"<nvram template='{OUT}/VARS.fd'>{{S}}/vars.fd</nvram>", "", "/domain/os/nvram"),
    ("audio", "path"): (f"<audio id='1' type='file' path='{OUT}/sound.wav'/>", "", "", "/domain/devices/audio"),
    ("entry", "file"): ("", "", f"<sysinfo type='fwcfg'><entry name='opt/x' file='{OUT}/blob'/></sysinfo>",
                        "/domain/sysinfo/entry"),
    ("backend", "logFile"): (f"<interface type='user'><backend type='passt' logFile='{OUT}/passt.log'/>"
                             "</interface>", "", "", "/domain/devices/interface[2]/backend"),
    ("listen", "socket"): (f"<graphics type='vnc'><listen type='socket' socket='{OUT}/vnc.sock'/></graphics>", "",
                           "", "/domain/devices/graphics[2]/listen"),
    ("graphics", "socket"): (f"<graphics type='vnc' socket='{OUT}/vnc.sock'/>", "", "",
                             "/domain/devices/graphics[2]"),
    ("target", "path"): (f"<lease><lockspace>s</lockspace><key>k</key><target path='{OUT}/lease'/></lease>",
                         "", "", "/domain/devices/lease/target"),
}

# (parent, element) whose text is a host path: a case with the path outside the sandbox.
PATH_TEXTS: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("os", "loader"): ("", f"<loader type='pflash'>{OUT}/OVMF_CODE.fd</loader>", "", "/domain/os/loader"),
    ("os", "nvram"): ("", f"<nvram>{OUT}/VARS.fd</nvram>", "", "/domain/os/nvram"),
    ("os", "kernel"): ("", f"<kernel>{OUT}/vmlinuz</kernel>", "", "/domain/os/kernel[2]"),
    ("os", "initrd"): ("", f"<initrd>{OUT}/initrd.img</initrd>", "", "/domain/os/initrd[2]"),
    ("os", "dtb"): ("", f"<dtb>{OUT}/board.dtb</dtb>", "", "/domain/os/dtb"),
    ("acpi", "table"): ("", f"<acpi><table type='slic'>{OUT}/slic.dat</table></acpi>", "",
                        "/domain/os/acpi/table"),
    ("source", "path"): (f"<memory model='nvdimm'><source><path>{OUT}/nvdimm</path></source>"
                         "<target><size unit='KiB'>524288</size></target></memory>", "", "",
                         "/domain/devices/memory/source/path"),
    ("device", "path"): ("", "", f"<blkiotune><device><path>{OUT}/disk</path><weight>500</weight></device>"
                                 "</blkiotune>", "/domain/blkiotune/device/path"),
}

# Attributes of <source> naming host paths (and 'dev' of character devices).
SOURCE_ATTRIBUTES: dict[str, tuple[str, str, str, str]] = {
    "file": (f"<disk type='file' device='disk'><driver type='raw'/><source file='{OUT}/disk.img'/>"
             "<target dev='vdb'/></disk>", "", "", "/domain/devices/disk[2]/source"),
    "path": (f"<channel type='unix'><source mode='bind' path='{OUT}/agent.sock'/>"
             "<target type='virtio' name='x'/></channel>", "", "", "/domain/devices/channel/source"),
    "dir": (f"<filesystem type='mount'><source dir='{OUT}/data'/><target dir='data'/></filesystem>", "", "",
            "/domain/devices/filesystem/source"),
    "socket": (f"<filesystem type='mount'><driver type='virtiofs'/><source socket='{OUT}/fs.sock'/>"
               "<target dir='data'/></filesystem>", "", "", "/domain/devices/filesystem/source"),
    "dev": (f"<serial type='dev'><source dev='{OUT}/ttyS0'/></serial>", "", "", "/domain/devices/serial[2]/source"),
}

OUTSIDE = "is outside the job's sandbox"
# (case id, case, what the refusal says: the element rules say what they like, the path rules OUTSIDE)
SAFETY_CASES = ([(f"rule {tag}", case, "") for tag, case in ELEMENT_RULES.items()]
                + [(f"path attribute {e}/@{a}", case, OUTSIDE) for (e, a), case in PATH_ATTRIBUTES.items()]
                + [(f"path text {p}/{e}", case, OUTSIDE) for (p, e), case in PATH_TEXTS.items()]
                + [(f"source attribute @{a}", case, OUTSIDE) for a, case in SOURCE_ATTRIBUTES.items()])


def test_every_safety_rule_has_a_case() -> None:
    assert set(ELEMENT_RULES) == set(safety._RULES)
    assert set(PATH_ATTRIBUTES) == safety._PATH_ATTRS
    assert set(PATH_TEXTS) == safety._PATH_TEXT
    assert set(SOURCE_ATTRIBUTES) == set(safety._SOURCE_PATH_ATTRS) | {"dev"}


@pytest.mark.parametrize("case, says", [(case, says) for _, case, says in SAFETY_CASES],
                         ids=[name for name, _, _ in SAFETY_CASES])
def test_each_rule_refuses_its_case_at_its_element(sandbox: Path, case: tuple[str, str, str, str],  # noqa: F811
                                                   says: str) -> None:
    devices, os_extra, top, element = case
    found = refusals(sandbox, domain(sandbox, devices, os_extra=os_extra, top=top))
    assert any(r.startswith(f"{element} (line ") and says in r for r in found), found


# --- discovery ------------------------------------------------------------------------------------

QEMU = "/usr/bin/qemu-system-x86_64"
CAPABILITIES = f"""<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><emulator>{QEMU}</emulator>
<machine canonical='pc-i440fx-7.2'>pc</machine><machine>q35</machine>
<domain type='qemu'/><domain type='kvm'/></arch></guest>
<guest><os_type>hvm</os_type><arch name='i686'><emulator>/usr/bin/qemu-system-i386</emulator>
<machine>pc</machine><domain type='qemu'/></arch></guest>
</capabilities>"""
DOMAIN_CAPABILITIES = """<domainCapabilities><vcpu max='288'/><os supported='yes'>
<enum name='firmware'><value>efi</value></enum></os><devices>
<disk supported='yes'><enum name='bus'><value>ide</value><value>sata</value><value>virtio</value></enum></disk>
<filesystem supported='yes'><enum name='driverType'><value>path</value><value>virtiofs</value></enum></filesystem>
</devices></domainCapabilities>"""
WORKING = {"qemu": ProbeResult(True, "ok"), "kvm": ProbeResult(True, "ok")}
TOY = ScriptAnswer("toy", True, "VM_TOY_ATTR_EFI = false\n")


def seen(domcaps: str = DOMAIN_CAPABILITIES, **changes: object) -> dict[str, str]:
    """The ad for a node where qemu and kvm work, with ``changes`` to what discovery observed."""
    answer = LibvirtAnswer(CAPABILITIES, {"qemu": domcaps, "kvm": domcaps}, {}, networks=("default", "isolated"))
    return build_ad(Observations(**({"libvirt": answer, "boot_probes": WORKING} | changes)))


ATTRIBUTE_CASES: dict[str, Callable[[], None]] = {}


def case(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(function: Callable[[], None]) -> Callable[[], None]:
        ATTRIBUTE_CASES[name] = function
        return function
    return register


@case("VM_TYPES")
def _types() -> None:
    assert seen()["VM_TYPES"] == '"libvirt-managed"'
    assert seen(scripts=(TOY,))["VM_TYPES"] == '"libvirt-managed,script-managed"'
    assert seen(libvirt=None, scripts=(TOY,))["VM_TYPES"] == '"script-managed"'
    assert seen(runner_error="no runner")["VM_TYPES"] == '""'


@case("VM_HYPERVISORS")
def _hypervisors() -> None:
    assert seen()["VM_HYPERVISORS"] == '"qemu,kvm"'
    assert seen(boot_probes={"qemu": WORKING["qemu"], "kvm": ProbeResult(False, "hung")})["VM_HYPERVISORS"] \
        == '"qemu"'
    assert seen(scripts=(TOY,))["VM_HYPERVISORS"] == '"qemu,kvm,toy"'


@case("VM_RUNNER_VERSION")
def _version() -> None:
    assert seen()["VM_RUNNER_VERSION"] == f'"{__version__}"'
    assert seen(version="9.9.9")["VM_RUNNER_VERSION"] == '"9.9.9"'


@case("VM_DISCOVERY_ERROR")
def _error() -> None:
    assert seen()["VM_DISCOVERY_ERROR"] == "undefined"
    assert seen(libvirt=None, libvirt_error="libvirt did not answer")["VM_DISCOVERY_ERROR"] \
        == '"libvirt did not answer"'
    assert seen(runner_error="no runner at /x")["VM_DISCOVERY_ERROR"] == '"no runner at /x"'


@case("VM_DISCOVERY_NOTES")
def _notes() -> None:
    assert seen()["VM_DISCOVERY_NOTES"] == "undefined"
    hung = {"qemu": WORKING["qemu"], "kvm": ProbeResult(False, "kvm guest hung")}
    assert seen(boot_probes=hung)["VM_DISCOVERY_NOTES"] == '"kvm: kvm guest hung"'


@case("VM_CONDOR_CONFIG")
def _condor_config() -> None:
    assert seen()["VM_CONDOR_CONFIG"] == "undefined"
    assert seen(config_source="/opt/condor/etc/condor_config")["VM_CONDOR_CONFIG"] == '"/opt/condor/etc/condor_config"'


@case("VM_CONFIG_DIGEST")
def _config_digest() -> None:
    knobs_digest = digest({"VMSUBMIT_MAX_VCPUS": "8"})
    assert seen(config_digest=knobs_digest)["VM_CONFIG_DIGEST"] == f'"{knobs_digest}"'


@case("VM_DISCOVERY_AGE")
def _discovery_age() -> None:
    assert seen()["VM_DISCOVERY_AGE"] == "0"
    slow = Observations(None, libvirt_error="libvirt did not answer", libvirt_timed_out=True)
    kept = {"qemu": Verified("libvirt-managed", {"VM_QEMU_ATTR_MAX_VCPUS": "255"}, at=1000.0)}
    assert build_ad(slow, kept, now=1100.0)["VM_DISCOVERY_AGE"] == "100"


@case("VM_SCREEN_VIDEO")
def _screen_video() -> None:
    assert seen()["VM_SCREEN_VIDEO"] == "false"
    assert seen(screen_video=True)["VM_SCREEN_VIDEO"] == "true"


@case("VM_IMAGES")
def _images() -> None:
    assert seen()["VM_IMAGES"] == '""'
    assert seen(images=("debian-12", "tiny"))["VM_IMAGES"] == '"debian-12,tiny"'


@case("MAX_VCPUS")
def _max_vcpus() -> None:
    assert seen()["VM_KVM_ATTR_MAX_VCPUS"] == "288"
    assert seen(max_vcpus=8)["VM_KVM_ATTR_MAX_VCPUS"] == "8"


@case("MACHINE_TYPES")
def _machine_types() -> None:
    assert seen()["VM_KVM_ATTR_MACHINE_TYPES"] == '"pc,pc-i440fx-7.2,q35"'


@case("ARCHES")
def _arches() -> None:
    ad = seen()
    assert (ad["VM_QEMU_ATTR_ARCHES"], ad["VM_KVM_ATTR_ARCHES"]) == ('"i686,x86_64"', '"x86_64"')


@case("EFI")
def _efi() -> None:
    assert seen()["VM_KVM_ATTR_EFI"] == "true"
    no_firmware = DOMAIN_CAPABILITIES.replace("<value>efi</value>", "")
    assert seen(no_firmware)["VM_KVM_ATTR_EFI"] == "false"


@case("DISK_BUSES")
def _disk_buses() -> None:
    assert seen()["VM_KVM_ATTR_DISK_BUSES"] == '"ide,sata,virtio"'
    allowed = knobs.ALLOWED_BUSES.value({"VMSUBMIT_ALLOWED_BUSES": "VirtIO, sata"})
    assert seen(allowed_buses=allowed)["VM_KVM_ATTR_DISK_BUSES"] == '"sata,virtio"'


@case("NIC_MODELS")
def _nic_models() -> None:
    assert "VM_KVM_ATTR_NIC_MODELS" not in seen()
    assert seen(nic_models={QEMU: ("virtio", "e1000")})["VM_KVM_ATTR_NIC_MODELS"] == '"virtio,e1000"'


@case("VIRTIOFS")
def _virtiofs() -> None:
    assert seen()["VM_KVM_ATTR_VIRTIOFS"] == "false"  # QEMU has it, but no virtiofsd the runner can start
    assert seen(virtiofsd=True)["VM_KVM_ATTR_VIRTIOFS"] == "true"
    no_virtiofs = DOMAIN_CAPABILITIES.replace("<value>virtiofs</value>", "")
    assert seen(no_virtiofs, virtiofsd=True)["VM_KVM_ATTR_VIRTIOFS"] == "false"


@case("NETWORKS")
def _networks() -> None:
    assert seen()["VM_KVM_ATTR_NETWORKS"] == '""'
    assert seen(allowed_networks=("default", "br0", "gone"))["VM_KVM_ATTR_NETWORKS"] == '"default"'


@case("BRIDGES")
def _bridges() -> None:
    assert seen(bridges=("br0",))["VM_KVM_ATTR_BRIDGES"] == '""'
    assert seen(bridges=("br0",), allowed_networks=("default", "br0"))["VM_KVM_ATTR_BRIDGES"] == '"br0"'


def test_every_advertised_attribute_has_a_case() -> None:
    assert set(ATTRIBUTE_CASES) == {fact.name for fact in NODE_ATTRIBUTES + HYPERVISOR_FACTS}


@pytest.mark.parametrize("name", sorted(ATTRIBUTE_CASES))
def test_each_attribute_follows_what_discovery_observed(name: str) -> None:
    ATTRIBUTE_CASES[name]()

