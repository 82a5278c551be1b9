"""Admin policy: the shipped stylesheets, the limits, config knobs, and `condor_vmsubmit policy-check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from condor_vmsubmit.checks.policy import Policy, apply_policy, describe_changes
from condor_vmsubmit.errors import InputError, UnsafeInputError
from condor_vmsubmit.formats.libvirt import spec_from_domain
from condor_vmsubmit.xmlsafe import parse_bytes, parse_file

from conftest import REPO, corpus_folder

EXAMPLES = REPO / "examples" / "policy"

BIG = b"""<domain type='kvm'>
  <name>big</name>
  <memory unit='GiB'>8</memory>
  <currentMemory unit='GiB'>8</currentMemory>
  <vcpu>4</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/s/disk.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/s/cd.iso'/>
      <target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='user'><mac address='52:54:00:aa:bb:cc'/><model type='virtio'/></interface>
    <interface type='network'><mac address='01:00:5E:AA:BB:CD'/><source network='lab'/></interface>
  </devices>
</domain>"""


def big() -> etree._Element:
    return parse_bytes(BIG, "big.xml")


def example(*names: str, **limits) -> Policy:
    return Policy(stylesheets=tuple(EXAMPLES / n for n in names), allowed_networks=frozenset({"lab"}), **limits)


def stylesheet(tmp_path: Path, body: str, name: str = "p.xsl") -> Path:
    path = tmp_path / name
    path.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
                    'xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">'
                    f'{body}</xsl:stylesheet>')
    return path


IDENTITY = '<xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>' \
           '</xsl:template>'


def test_cap_memory_caps_memory_and_current_memory() -> None:
    result = apply_policy(big(), example("cap-memory.xsl"))
    assert result.verdict == "modified"
    assert result.changes == ("memory 8 GiB -> 4 GiB", "currentMemory 8 GiB -> 4 GiB")
    assert spec_from_domain(result.root, "big.xml").memory_bytes == 4 * 2**30
    assert result.summary() == "memory 8 GiB -> 4 GiB; currentMemory 8 GiB -> 4 GiB"


@pytest.mark.parametrize("memory, capped", [
    ("<memory unit='KB'>5000000</memory>", True),        # 5 GB decimal is above 4 GiB
    ("<memory unit='MB'>4000</memory>", False),          # 4000 MB is below 4 GiB
    ("<memory>4194304</memory>", False),                 # exactly 4 GiB in the default KiB
    ("<memory unit='b'>4294968320</memory>", True),      # 4 GiB + 1 KiB
    ("<memory unit='T'>1</memory>", True),
])
def test_cap_memory_reads_libvirt_units(memory: str, capped: bool) -> None:
    root = parse_bytes(BIG.replace(b"<memory unit='GiB'>8</memory>", memory.encode())
                       .replace(b"<currentMemory unit='GiB'>8</currentMemory>", b""), "m.xml")
    result = apply_policy(root, example("cap-memory.xsl"))
    assert (result.verdict == "modified") is capped
    assert spec_from_domain(result.root, "m.xml").memory_bytes <= 4 * 2**30


def test_strip_and_rewrite_macs() -> None:
    stripped = apply_policy(big(), example("strip-macs.xsl"))
    assert stripped.changes == ("interface 1 MAC removed", "interface 2 MAC removed")
    assert stripped.root.find("devices/interface/mac") is None
    rewritten = apply_policy(big(), example("rewrite-macs.xsl"))
    assert rewritten.changes == ("interface 2 MAC address 01:00:5E:AA:BB:CD -> 52:54:00:aa:bb:cd",)
    assert [n.mac for n in spec_from_domain(rewritten.root, "x").nics] == ["52:54:00:aa:bb:cc", "52:54:00:aa:bb:cd"]


def test_link_down() -> None:
    result = apply_policy(big(), example("link-down.xsl"))
    assert result.changes == ("interface 1 link up -> down", "interface 2 link up -> down")
    assert {n.link for n in spec_from_domain(result.root, "x").nics} == {"down"}
    again = apply_policy(result.root, example("link-down.xsl"))
    assert again.verdict == "accepted" and again.summary() == "accepted unchanged"


def test_refuse_removable_rejects_with_the_stylesheets_message() -> None:
    result = apply_policy(big(), example("refuse-removable.xsl"))
    assert (result.verdict, result.root) == ("rejected", None)
    assert result.reason == "cdrom drive hdc is not allowed on this pool (refuse-removable.xsl)"
    root = big()
    root.find("devices").remove(root.findall("devices/disk")[1])
    assert apply_policy(root, example("refuse-removable.xsl")).verdict == "accepted"


def test_pin_network() -> None:
    result = apply_policy(big(), Policy((EXAMPLES / "pin-network.xsl",), allowed_networks=frozenset({"default"})))
    assert result.changes == ("interface 1 type user -> network", "interface 1 source added (network=default)",
                              "interface 2 source network lab -> default")
    assert [(n.network_kind, n.network, n.mac) for n in spec_from_domain(result.root, "x").nics] == [
        ("network", "default", "52:54:00:aa:bb:cc"), ("network", "default", "01:00:5e:aa:bb:cd")]


def test_stylesheets_apply_in_order_and_the_input_is_left_alone() -> None:
    root = big()
    before = etree.tostring(root)
    result = apply_policy(root, example("strip-macs.xsl", "link-down.xsl", "cap-memory.xsl"))
    assert len(result.changes) == 6 and result.verdict == "modified"
    assert etree.tostring(root) == before


def test_limits_reject_with_every_reason() -> None:
    policy = Policy(max_memory_bytes=4 * 2**30, max_vcpus=2, allowed_buses=frozenset({"virtio", "sata"}))
    result = apply_policy(big(), policy)
    assert result.verdict == "rejected"
    assert result.reason == (
        "memory 8 GiB exceeds the admin's limit of 4 GiB (VMSUBMIT_MAX_MEMORY_MB); "
        "4 vcpus exceed the admin's limit of 2 (VMSUBMIT_MAX_VCPUS); "
        "interface 2 joins network 'lab', not one the admin allows (VMSUBMIT_ALLOWED_NETWORKS: none); "
        "disk 2 (hdc) uses bus 'ide', not one the admin allows (VMSUBMIT_ALLOWED_BUSES: sata, virtio)")


def test_limits_apply_after_the_stylesheets() -> None:
    assert apply_policy(big(), example(max_memory_bytes=4 * 2**30)).verdict == "rejected"
    assert apply_policy(big(), example("cap-memory.xsl", max_memory_bytes=4 * 2**30)).verdict == "modified"


def test_non_terminating_messages_become_notes(tmp_path: Path) -> None:
    sheet = stylesheet(tmp_path, '<xsl:template match="/"><xsl:message>checked by site policy</xsl:message>'
                                 '<xsl:copy-of select="."/></xsl:template>')
    result = apply_policy(big(), Policy((sheet,), allowed_networks=frozenset({"lab"})))
    assert (result.verdict, result.notes) == ("accepted", ("checked by site policy",))


def test_a_rejection_may_say_anything(tmp_path: Path) -> None:
    sheet = stylesheet(tmp_path, '<xsl:template match="/"><xsl:message>read rights for /x denied</xsl:message>'
                                 '<xsl:message terminate="yes">access denied: GPUs are refused here</xsl:message>'
                                 '</xsl:template>', "gpu.xsl")
    result = apply_policy(big(), Policy((sheet,)))
    assert (result.verdict, result.reason) == ("rejected", "access denied: GPUs are refused here (gpu.xsl)")
    assert result.notes == ("read rights for /x denied",)


def test_a_runaway_stylesheet_is_an_input_error(tmp_path: Path) -> None:
    sheet = stylesheet(tmp_path, '<xsl:template name="r"><xsl:call-template name="r"/></xsl:template>'
                                 '<xsl:template match="/"><xsl:call-template name="r"/></xsl:template>')
    with pytest.raises(InputError, match="policy stylesheet failed: .*infinite template recursion"):
        apply_policy(big(), Policy((sheet,)))


def test_a_stylesheet_that_drops_the_domain_rejects(tmp_path: Path) -> None:
    sheet = stylesheet(tmp_path, '<xsl:template match="/"><vm/></xsl:template>', "odd.xsl")
    result = apply_policy(big(), Policy((sheet,)))
    assert result.verdict == "rejected" and result.reason == "policy stylesheet odd.xsl produced no <domain>"


def test_a_broken_stylesheet_is_an_input_error(tmp_path: Path) -> None:
    sheet = stylesheet(tmp_path, '<xsl:template match="/"><xsl:value-of select="1 +"/></xsl:template>')
    with pytest.raises(InputError, match="not a usable XSLT stylesheet"):
        apply_policy(big(), Policy((sheet,)))
    with pytest.raises(InputError, match="cannot read"):
        apply_policy(big(), Policy((tmp_path / "missing.xsl",)))


@pytest.mark.parametrize("body, refused", [
    ('<xsl:template match="/"><x><xsl:copy-of select="document(\'{secret}\')"/></x></xsl:template>', "reach a file"),
    ('<xsl:template match="/"><exsl:document href="{out}" method="text">x</exsl:document><xsl:copy-of select="."/>'
     '</xsl:template>', "reach a file"),
    ('<xsl:include href="{secret}"/>' + IDENTITY, "self-contained"),
    ('<xsl:import href="{secret}"/>' + IDENTITY, "self-contained"),
])
def test_stylesheets_cannot_touch_files(tmp_path: Path, body: str, refused: str) -> None:
    secret = tmp_path / "secret.xsl"
    secret.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>')
    out = tmp_path / "written.txt"
    sheet = stylesheet(tmp_path, body.format(secret=secret, out=out))
    with pytest.raises(UnsafeInputError, match=refused):
        apply_policy(big(), Policy((sheet,)))
    assert not out.exists()


def test_describe_changes_aligns_removed_devices() -> None:
    root = big()
    smaller = big()
    smaller.find("devices").remove(smaller.findall("devices/disk")[0])
    assert describe_changes(root, smaller) == ["disk 1 (disk vda) removed"]
    assert describe_changes(root, big()) == []
    retyped = big()
    retyped.set("type", "qemu")
    retyped.find("vcpu").text = "2"
    assert describe_changes(root, retyped) == ["domain type kvm -> qemu", "vcpu 4 -> 2"]


def test_policy_from_config_knobs() -> None:
    policy = Policy.from_config({"VMSUBMIT_POLICY_XSLT": "/etc/a.xsl, /etc/b.xsl", "VMSUBMIT_MAX_MEMORY_MB": "2048",
                                 "VMSUBMIT_MAX_VCPUS": "8", "VMSUBMIT_ALLOWED_NETWORKS": "default jobs"})
    assert policy == Policy((Path("/etc/a.xsl"), Path("/etc/b.xsl")), 2 * 2**30, 8,
                            frozenset({"default", "jobs"}), frozenset())
    assert Policy.from_config({}) == Policy()
    assert Policy.from_config({"VMSUBMIT_ALLOW_HOST_MEDIA": "True"}).allow_host_media
    with pytest.raises(InputError, match="VMSUBMIT_MAX_VCPUS = 'lots' is not a positive whole number"):
        Policy.from_config({"VMSUBMIT_MAX_VCPUS": "lots"})
    with pytest.raises(InputError, match="VMSUBMIT_ALLOW_HOST_MEDIA = 'maybe' is not true or false"):
        Policy.from_config({"VMSUBMIT_ALLOW_HOST_MEDIA": "maybe"})


def condor_config(tmp_path: Path, text: str) -> dict[str, str]:
    config = tmp_path / "condor_config"
    config.write_text(text)
    return {**os.environ, "CONDOR_CONFIG": str(config)}


def test_policy_from_real_htcondor_configuration(tmp_path: Path) -> None:
    env = condor_config(tmp_path, f"VMSUBMIT_POLICY_XSLT = {EXAMPLES / 'cap-memory.xsl'}\nVMSUBMIT_MAX_VCPUS = 6\n"
                                  "VMSUBMIT_ALLOWED_NETWORKS = lab\n")
    code = ("from condor_vmsubmit.checks.policy import Policy; p = Policy.from_config(); "
            "print(p.stylesheets[0].name, p.max_vcpus, sorted(p.allowed_networks))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["cap-memory.xsl", "6", "['lab']"]


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["condor_vmsubmit", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture()
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.xml"
    path.write_bytes(BIG)
    return path


def test_policy_check_cli_modified(big_file: Path) -> None:
    done = run_cli("policy-check", big_file, "--policy", EXAMPLES / "cap-memory.xsl",
                   "--policy", EXAMPLES / "strip-macs.xsl", "--allow-network", "lab", "--xml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("policy: modified\n  memory 8 GiB -> 4 GiB\n  currentMemory 8 GiB -> 4 GiB\n"
                                  "  interface 1 MAC removed\n  interface 2 MAC removed\n<domain")
    assert "<memory unit=\"MiB\">4096</memory>" in done.stdout and done.stderr == ""


def test_policy_check_cli_rejected_exits_5(big_file: Path) -> None:
    done = run_cli("policy-check", big_file, "--policy", EXAMPLES / "refuse-removable.xsl", "--allow-network", "lab")
    assert (done.returncode, done.stdout) == (5, "policy: rejected\n")
    assert done.stderr == (f"condor_vmsubmit: error: {big_file}: policy rejected the VM: "
                           "cdrom drive hdc is not allowed on this pool (refuse-removable.xsl)\n")
    limits = run_cli("policy-check", big_file, "--max-memory", "1GiB", "--max-vcpus", "64", "--allow-network", "lab")
    assert limits.returncode == 5 and "memory 8 GiB exceeds the admin's limit of 1 GiB" in limits.stderr


def test_policy_check_cli_reads_the_htcondor_configuration(big_file: Path, tmp_path: Path) -> None:
    env = condor_config(tmp_path, f"VMSUBMIT_POLICY_XSLT = {EXAMPLES / 'link-down.xsl'}\n"
                                  "VMSUBMIT_ALLOWED_NETWORKS = lab\n")
    done = run_cli("policy-check", big_file, env=env)
    assert done.stdout == "policy: modified\n  interface 1 link up -> down\n  interface 2 link up -> down\n"
    # the policy keeps the second interface's multicast MAC, which the safety rules refuse (exit 9)
    assert done.returncode == 9
    assert done.stderr.splitlines()[0] == ("condor_vmsubmit: refused: /domain/devices/interface[2] (line 13): "
                                           "MAC address '01:00:5E:AA:BB:CD' is multicast")


def test_policy_check_cli_bad_size(big_file: Path) -> None:
    done = run_cli("policy-check", big_file, "--max-memory", "lots")
    assert done.returncode == 3 and "--max-memory" in done.stderr and "Traceback" not in done.stderr


def test_examples_agree_with_libvirt_on_the_corpus() -> None:
    """Over every domain libvirt accepts: strip-macs removes exactly the MACs libvirt read,
    link-down downs exactly libvirt's interfaces, cap-memory leaves min(memory, 4 GiB)."""
    folder = corpus_folder("libvirt")
    oracle = json.loads((folder / "EXPECTED.json").read_text())
    checked = 0
    for name, facts in oracle.items():
        if name.startswith("_") or not facts.get("libvirt_accepts"):
            continue
        root = parse_file(folder / name)
        networks = frozenset(n.network for n in spec_from_domain(root, name).nics if n.network)

        def run(sheet: str, root: etree._Element = root, networks: frozenset[str] = networks, name: str = name):
            return apply_policy(root, Policy((EXAMPLES / sheet,), allowed_networks=networks), path=name)

        stripped = run("strip-macs.xsl")
        assert sum(c.endswith("MAC removed") for c in stripped.changes) == len(facts["macs"]), name
        downed = spec_from_domain(run("link-down.xsl").root, name)
        assert sum(n.link == "down" for n in downed.nics) == facts["interface_count"], name
        capped = spec_from_domain(run("cap-memory.xsl").root, name)
        assert capped.memory_bytes == min(facts["max_memory_kib"] * 1024, 4 * 2**30), name
        checked += 1
    assert checked > 1000


def test_policy_check_on_an_ovf_appliance_and_a_disk_image(tmp_path: Path) -> None:
    """Any format: the policy sees the domain the runner would render from the spec."""
    photon = corpus_folder("ovf") / "govmomi__external__PhotonOS__photon.ovf"
    refused = run_cli("policy-check", photon, "--policy", EXAMPLES / "refuse-removable.xsl")
    assert refused.returncode == 5 and "cdrom drive hda is not allowed on this pool" in refused.stderr
    changed = run_cli("policy-check", photon, "--policy", EXAMPLES / "link-down.xsl",
                      "--policy", EXAMPLES / "cap-memory.xsl")
    assert (changed.returncode, changed.stdout) == (0, "policy: modified\n  interface 1 link state up -> down\n")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", tmp_path / "disk.vmdk", "1G"], check=True)
    limited = run_cli("policy-check", tmp_path / "disk.vmdk", "--max-memory", "512MiB")
    assert limited.returncode == 5 and "memory 1 GiB exceeds the admin's limit of 512 MiB" in limited.stderr


def test_summary_is_capped_for_the_job_ad() -> None:
    root = parse_bytes(b"<domain><name>n</name><memory>1024</memory><devices>"
                       + b"<interface type='user'><mac address='52:54:00:00:00:01'/></interface>" * 30
                       + b"</devices></domain>", "many.xml")
    result = apply_policy(root, Policy((EXAMPLES / "strip-macs.xsl",)))
    assert len(result.changes) == 30
    assert result.summary().endswith("interface 20 MAC removed; and 10 more")
