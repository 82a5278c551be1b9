"""Hostile input through the whole pipeline, mostly through the real commands.

Every case must end in one clear error line with its exit code (3 malformed, 4 unsafe,
5 policy), never a traceback; a canary file's content must never show up in any
output, and no file may appear anywhere under the test's folder (where the canary
lives, and the commands' working and home folders).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from condor_vmsubmit.checks.policy import Policy, apply_policy
from condor_vmsubmit.checks.safety import check_domain, pin_graphics_to_loopback
from condor_vmsubmit.formats.libvirt import spec_from_domain
from condor_vmsubmit.xmlsafe import parse_file

from conftest import REPO

CANARY = "CANARY-7f3a-must-never-be-printed"


@dataclass(frozen=True)
class World:
    """A test folder with a secret outside the job's reach and folders to run commands in."""

    root: Path
    secret: Path
    work: Path

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*")}

    def write(self, name: str, text: str) -> Path:
        path = self.work / name
        path.write_text(text.replace("{SECRET}", str(self.secret)).replace("{ROOT}", str(self.root)))
        return path

    def run(self, *args: str | Path) -> subprocess.CompletedProcess:
        """Run a command in ``work`` with HOME and TMPDIR inside the test folder; nothing may appear."""
        before = self.files()
        home = self.root / "home"
        env = {**os.environ, "HOME": str(home), "TMPDIR": str(home), "XDG_CACHE_HOME": str(home)}
        done = subprocess.run([str(a) for a in args], cwd=self.work, env=env, capture_output=True, text=True,
                              timeout=120)
        assert self.files() == before, f"{args} created {self.files() - before}"
        assert CANARY not in done.stdout + done.stderr
        return done


@pytest.fixture()
def world(tmp_path: Path) -> World:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text(CANARY + "\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "home").mkdir()
    return World(tmp_path, secret, tmp_path / "work")


def assert_refused(done: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    assert done.returncode == code, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


DOMAIN_TAIL = "<domain type='qemu'><name>{NAME}</name><memory unit='MiB'>256</memory></domain>"
XML_ATTACKS = {
    "xxe-file": ('<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{SECRET}">]>', "&x;", "entities"),
    "xxe-parameter": ('<!DOCTYPE domain [<!ENTITY % p SYSTEM "file://{SECRET}"> %p;]>', "x", ""),
    "external-dtd": ('<!DOCTYPE domain SYSTEM "file://{SECRET}">', "x", "external DTD"),
    "billion-laughs": ('<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                       '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>',
                       "&d;&d;&d;&d;", "entities"),
}
DOMAIN_COMMANDS = {
    "inspect": ("condor_vmsubmit", "inspect"),
    "policy-check": ("condor_vmsubmit", "policy-check", "--max-vcpus", "8"),
    "submit": ("condor_libvirt_submit", "--dry-run"),
}


@pytest.mark.parametrize("attack", XML_ATTACKS)
@pytest.mark.parametrize("command", DOMAIN_COMMANDS)
def test_xml_attacks_on_domain_xml(world: World, attack: str, command: str) -> None:
    doctype, name, why = XML_ATTACKS[attack]
    path = world.write("domain.xml", f"<?xml version='1.0'?>\n{doctype}\n" + DOMAIN_TAIL.replace("{NAME}", name))
    program, *args = DOMAIN_COMMANDS[command]
    assert_refused(world.run(program, *args[:1], path, *args[1:]) if command != "submit"
                   else world.run(program, path, *args), 4, why)


@pytest.mark.parametrize("command", DOMAIN_COMMANDS)
def test_huge_domain_xml(world: World, command: str) -> None:
    path = world.work / "huge.xml"
    with open(path, "wb") as handle:
        handle.write(b"<domain>")
        handle.truncate(33 * 2**20)
    program, *args = DOMAIN_COMMANDS[command]
    done = world.run(program, path, *args) if command == "submit" else world.run(program, args[0], path, *args[1:])
    assert_refused(done, 4, "larger than the")


MALFORMED = {
    "deep": (b"<domain type='qemu'><name>d</name><memory>1024</memory><metadata>" + b"<a>" * 5000 + b"</a>" * 5000
             + b"</metadata></domain>", "Excessive depth"),
    "long-attribute": (b"<domain type='qemu'><name>d</name><memory>1024</memory><devices><disk type='file'>"
                       b"<source file='/" + b"a" * 20_000_000 + b"'/></disk></devices></domain>", "limit exceeded"),
    "bad-utf8": (b"<domain type='qemu'><name>\xff\xfe</name><memory>1024</memory></domain>", "Invalid bytes"),
    "nul": (b"<domain type='qemu'><name>a\x00b</name><memory>1024</memory></domain>", "Invalid character"),
    "control-character": (b"<domain type='qemu'><name>a&#1;b</name><memory>1024</memory></domain>", "invalid xmlChar"),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("command", ["inspect", "policy-check"])
def test_malformed_domain_xml(world: World, case: str, command: str) -> None:
    content, why = MALFORMED[case]
    path = world.work / "domain.xml"
    path.write_bytes(content)
    program, *args = DOMAIN_COMMANDS[command]
    assert_refused(world.run(program, args[0], path, *args[1:]), 3, "malformed XML", why)


@pytest.mark.parametrize("memory, why", [
    ("<memory unit='EiB'>99999999</memory>", "overflows 64 bits"),
    ("<memory>18446744073709551616</memory>", "overflows 64 bits"),
    ("<memory unit='parsecs'>1</memory>", "unknown unit 'parsecs'"),
    ("<memory>-5</memory>", "is not a whole number"),
    ("<memory>1e9</memory>", "is not a whole number"),
    ("<memory unit='MiB'>256</memory><vcpu>0</vcpu>", "is not a positive whole number"),
])
@pytest.mark.parametrize("command", ["inspect", "policy-check", "submit"])
def test_absurd_units_in_domain_xml(world: World, memory: str, why: str, command: str) -> None:
    path = world.write("units.xml", f"<domain type='qemu'><name>u</name>{memory}</domain>")
    program, *args = DOMAIN_COMMANDS[command]
    done = world.run(program, path, *args) if command == "submit" else world.run(program, args[0], path, *args[1:])
    assert_refused(done, 3, why)


def test_absurd_vcpus(world: World) -> None:
    path = world.write("cpus.xml", "<domain type='qemu'><name>c</name><memory>1024</memory>"
                                   "<vcpu>99999999999999999999999</vcpu></domain>")
    assert_refused(world.run("condor_vmsubmit", "inspect", path), 3, "more than libvirt accepts")
    path.write_text(path.read_text().replace("99999999999999999999999", "4096"))
    assert_refused(world.run("condor_vmsubmit", "policy-check", path, "--max-vcpus", "64"), 5,
                   "4096 vcpus exceed the admin's limit of 64")


@pytest.mark.parametrize("name", ["ユニコード-💥-vm", "rtl-\u202eexe.txt", "../../outside/evil",
                                  "x&#10;executable = /bin/sh&#10;queue 5"])
def test_unicode_and_hostile_names_stay_names(world: World, name: str) -> None:
    path = world.write("named.xml", DOMAIN_TAIL.replace("{NAME}", name))
    done = world.run("condor_libvirt_submit", path, "--dry-run")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    commands = [line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line]
    assert sum(key == "executable" for key, _ in commands) == 1
    assert done.stdout.rstrip().endswith("\nqueue") and done.stdout.count("\nqueue") == 1
    for key in ("log", "output", "error"):
        value = dict(commands)[key]
        assert "/" not in value and ".." not in value and value.isprintable() and value.isascii()
    inspected = world.run("condor_vmsubmit", "inspect", "--json", path)
    assert inspected.returncode == 0


OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="f1" ovf:href="{HREF}"/></References>
  <DiskSection><Info>disks</Info><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1"
    ovf:capacityAllocationUnits="byte * 2^30"
    ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info>vm</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>{UNITS}</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{MEMORY}</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>ide</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/d1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def ovf(world: World, href: str = "disk.vmdk", units: str = "byte * 2^20", memory: str = "512",
        doctype: str = "") -> Path:
    text = OVF.replace("{HREF}", href).replace("{UNITS}", units).replace("{MEMORY}", memory)
    return world.write("appliance.ovf", text.replace("?>\n", f"?>\n{doctype}\n", 1))


@pytest.mark.parametrize("href, why", [
    ("../outside/secret.txt", "escapes the package folder"),
    ("{SECRET}", "is not a path inside the package"),
    ("file://{SECRET}", "is not a path inside the package"),
    ("http://example.com/disk.vmdk", "is not a path inside the package"),
])
def test_ovf_hrefs_cannot_leave_the_package(world: World, href: str, why: str) -> None:
    path = ovf(world, href=href)
    assert_refused(world.run("condor_ovf_submit", path, "--dry-run"), 4, why)


@pytest.mark.parametrize("attack", XML_ATTACKS)
def test_xml_attacks_on_ovf(world: World, attack: str) -> None:
    doctype, _name, why = XML_ATTACKS[attack]
    path = ovf(world, doctype=doctype.replace("domain", "Envelope"))
    assert_refused(world.run("condor_vmsubmit", "inspect", path), 4, why)


@pytest.mark.parametrize("units", ["byte * 2^999", "byte * 10^-3", "furlongs"])
def test_absurd_ovf_allocation_units(world: World, units: str) -> None:
    assert_refused(world.run("condor_vmsubmit", "inspect", ovf(world, units=units)), 3, "allocation units")


def test_overflowing_ovf_memory_is_refused(world: World) -> None:
    assert_refused(world.run("condor_vmsubmit", "inspect", ovf(world, memory="99999999999999999999999")), 3)


def test_disk_sources_cannot_reach_outside_the_sandbox(world: World) -> None:
    """A job's domain XML after the admin policy: traversal, symlinks and absolute paths are refused."""
    sandbox = world.root / "sandbox"
    sandbox.mkdir()
    (sandbox / "link.raw").symlink_to(world.secret)
    path = world.write("domain.xml", """<domain type='qemu'><name>t</name><memory>1024</memory><devices>
      <disk type='file'><driver type='raw'/><source file='{ROOT}/sandbox/../outside/secret.txt'/>
        <target dev='vda'/></disk>
      <disk type='file'><driver type='raw'/><source file='{ROOT}/sandbox/link.raw'/><target dev='vdb'/></disk>
      <disk type='file'><driver type='raw'/><source file='../outside/secret.txt'/><target dev='vdc'/></disk>
      <filesystem type='mount'><source dir='{ROOT}/outside'/><target dir='share'/></filesystem>
    </devices></domain>""")
    result = apply_policy(parse_file(path), Policy((REPO / "examples/policy/strip-macs.xsl",)))
    found = [str(r) for r in check_domain(pin_graphics_to_loopback(result.root), sandbox)]
    assert len(found) == 4, found
    assert all("outside the job's sandbox" in r or "not an absolute path" in r for r in found)
    assert any(f"resolves to {world.secret}" in r for r in found)
    assert not any(CANARY in r for r in found)


def test_images_cannot_name_files_outside_the_sandbox(world: World) -> None:
    """A backing file or VMDK extent that is a symlink out of the sandbox is refused before it is read."""
    sandbox = world.root / "sandbox"
    sandbox.mkdir()
    (sandbox / "base.qcow2").symlink_to(world.secret)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2",
                    sandbox / "top.qcow2", "16M"], check=True)
    (sandbox / "ext-flat.vmdk").symlink_to(world.secret)
    (sandbox / "flat.vmdk").write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                                       'createType="monolithicFlat"\nRW 2048 FLAT "ext-flat.vmdk" 0\n')
    (sandbox / "abs.vmdk").write_text(f'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                                      f'createType="monolithicFlat"\nRW 2048 FLAT "{world.secret}" 0\n')
    path = world.write("domain.xml", """<domain type='qemu'><name>i</name><memory>1024</memory><devices>
      <disk type='file'><driver type='qcow2'/><source file='{ROOT}/sandbox/top.qcow2'/><target dev='vda'/></disk>
      <disk type='file'><driver type='vmdk'/><source file='{ROOT}/sandbox/flat.vmdk'/><target dev='vdb'/></disk>
      <disk type='file'><driver type='vmdk'/><source file='{ROOT}/sandbox/abs.vmdk'/><target dev='vdc'/></disk>
    </devices></domain>""")
    found = [r.reason for r in check_domain(parse_file(path), sandbox)]
    assert found[0] == ("image top.qcow2: backing file 'base.qcow2' is a symbolic link leading out of the "
                        "image's folder")
    assert found[1] == "image flat.vmdk: extent 'ext-flat.vmdk' is a symbolic link leading out of the image's folder"
    assert found[2].startswith(f"image abs.vmdk: extent '{world.secret}' is an absolute path")
    assert len(found) == 3 and not any(CANARY in r for r in found)


def test_multicast_and_malformed_macs(world: World) -> None:
    """Refused by the runner's safety check; rewrite-macs.xsl repairs a multicast one, not a malformed one."""
    path = world.write("macs.xml", """<domain type='qemu'><name>m</name><memory>1024</memory><devices>
      <interface type='user'><mac address='01:00:5e:00:00:fb'/></interface>
      <interface type='user'><mac address='52:54:00:12:34:5g'/></interface>
      <interface type='user'><mac address='ff:ff:ff:ff:ff:ff'/></interface>
      <interface type='user'><mac address='52:54:00:12:34:56:78'/></interface>
    </devices></domain>""")
    root = parse_file(path)
    reasons = [r.reason for r in check_domain(root, world.root)]
    malformed = "is malformed (expected six hex pairs such as 52:54:00:12:34:56)"
    assert reasons == ["MAC address '01:00:5e:00:00:fb' is multicast",
                       f"MAC address '52:54:00:12:34:5g' {malformed}",
                       "MAC address 'ff:ff:ff:ff:ff:ff' is multicast",
                       f"MAC address '52:54:00:12:34:56:78' {malformed}"]
    repaired = apply_policy(root, Policy((REPO / "examples/policy/rewrite-macs.xsl",))).root
    assert [r.reason.split("' is ")[1][:9] for r in check_domain(repaired, world.root)] == ["malformed"]
    assert [n.mac for n in spec_from_domain(repaired, "macs.xml").nics][0] == "52:54:00:00:00:fb"


XSL_HEAD = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
            'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">')
IDENTITY = '<xsl:template match="/"><xsl:copy-of select="."/></xsl:template>'
STYLESHEET_ATTACKS = {
    "document-file": (f'{XSL_HEAD}<xsl:template match="/"><domain><name><xsl:value-of '
                      'select="document(\'{SECRET}\')"/></name></domain></xsl:template></xsl:stylesheet>',
                      "tried to reach a file"),
    "document-url": (f'{XSL_HEAD}<xsl:template match="/"><xsl:copy-of select="document(\'http://127.0.0.1:9/x\')"/>'
                     '</xsl:template></xsl:stylesheet>', "tried to reach a file"),
    "exsl-write": (f'{XSL_HEAD}<xsl:template match="/"><exsl:document href="{{ROOT}}/outside/written.txt" '
                   'method="text">owned</exsl:document><xsl:copy-of select="."/></xsl:template></xsl:stylesheet>',
                   "tried to reach a file"),
    "include": (f'{XSL_HEAD}<xsl:include href="{{SECRET}}"/>{IDENTITY}</xsl:stylesheet>', "self-contained"),
    "import": (f'{XSL_HEAD}<xsl:import href="file://{{SECRET}}"/>{IDENTITY}</xsl:stylesheet>', "self-contained"),
    "entity": (f'<!DOCTYPE xsl:stylesheet [<!ENTITY s SYSTEM "file://{{SECRET}}">]>{XSL_HEAD}'
               '<xsl:template match="/"><domain><name>&s;</name></domain></xsl:template></xsl:stylesheet>',
               "entities"),
}


@pytest.mark.parametrize("attack", STYLESHEET_ATTACKS)
def test_policy_stylesheets_cannot_read_or_write_files(world: World, attack: str) -> None:
    text, why = STYLESHEET_ATTACKS[attack]
    sheet = world.write("evil.xsl", text)
    domain = world.write("domain.xml", DOMAIN_TAIL.replace("{NAME}", "victim"))
    assert_refused(world.run("condor_vmsubmit", "policy-check", domain, "--policy", sheet), 4, why)
    assert not (world.root / "outside" / "written.txt").exists()


def test_huge_policy_stylesheet(world: World) -> None:
    sheet = world.work / "huge.xsl"
    with open(sheet, "wb") as handle:
        handle.write(XSL_HEAD.encode())
        handle.truncate(33 * 2**20)
    domain = world.write("domain.xml", DOMAIN_TAIL.replace("{NAME}", "victim"))
    assert_refused(world.run("condor_vmsubmit", "policy-check", domain, "--policy", sheet), 4, "larger than the")
