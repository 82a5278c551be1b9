"""condor_vm_discover on this machine: real libvirt session daemon, real QEMU, real scripts.

The KVM verdict is checked against an independent oracle: whether the Debian kernel prints
its banner on the serial console under ``-accel kvm`` (on the test machines /dev/kvm exists
but a KVM guest hangs after the BIOS, so kvm must not be advertised there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import classad2
import htcondor2  # noqa: F401 - registers HTCondor's string-list functions with classad2
import pytest

from condor_vmsubmit import __version__
from condor_vmsubmit.attributes import HYPERVISOR_FACTS, NODE_ATTRIBUTES
from condor_vmsubmit.discover.ad import (
    LibvirtAnswer,
    Observations,
    ScriptAnswer,
    Verified,
    build_ad,
    cron_text,
    guest_types,
    keepable,
    verified,
)
from condor_vmsubmit.discover.probes import ProbeCache
from condor_vmsubmit.discover.run import DEFAULT_TIMEOUT
from condor_vmsubmit.kvmprobe import ProbeResult

from libvirt_session import QEMU, kernel_banner_under, parse_cron, run_discover, session_libvirtd, string_list

CLASSAD_TYPES = {"integer": int, "boolean": bool, "string": str, "string list": str}


@pytest.fixture(scope="module")
def uri() -> Iterator[str]:
    with session_libvirtd() as address:
        yield address


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="vmdisc-state-", dir="/tmp"))  # short: libvirt's sockets go in it
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder with a short path: libvirt's sockets must fit in a state dir inside it."""
    folder = Path(tempfile.mkdtemp(prefix="vmd-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def warm(uri: str, state_dir: Path) -> dict[str, str]:
    """The first run, with a long timeout as the admin guide's install step does: it lets the
    fresh session daemon probe QEMU and fills the probe cache.  Returns that run's ad."""
    done = run_discover("--uri", uri, "--state-dir", str(state_dir), "--timeout", "90")
    assert done.returncode == 0, done.stderr
    return parse_cron(done.stdout)


@pytest.fixture(scope="module")
def ad(uri: str, state_dir: Path, warm: dict[str, str]) -> dict[str, str]:
    """A run as the startd makes it: default budget, warm caches."""
    done = run_discover("--uri", uri, "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    return parse_cron(done.stdout)


@pytest.fixture(scope="module")
def libvirt_types(uri: str) -> set[str]:
    """The domain types libvirt itself claims for x86_64 guests here."""
    import libvirt

    connection = libvirt.open(uri)
    try:
        return {g.domain_type for g in guest_types(connection.getCapabilities()) if g.arch == "x86_64"}
    finally:
        connection.close()


def old_syntax(line: str) -> classad2.ClassAd:
    """One cron output line read as the startd reads it (old ClassAd syntax)."""
    return classad2.parseOne(line + "\n", classad2.ParserType.Old)


def test_the_output_is_startd_cron_format_and_every_line_parses_with_classad2(ad: dict[str, str]) -> None:
    declared = {fact.name: fact.classad_type for fact in NODE_ATTRIBUTES}
    assert list(ad)[:len(declared)] == list(declared)
    facts = {fact.name: fact.classad_type for fact in HYPERVISOR_FACTS}
    for name, value in ad.items():
        parsed = old_syntax(f"{name} = {value}")
        assert list(parsed.keys()) == [name]
        kind = declared.get(name) or facts.get(name.split("_ATTR_")[-1])
        assert kind, f"{name} is in neither table"
        if value != "undefined":
            assert type(parsed.eval(name)) is CLASSAD_TYPES[kind], (name, value)


def test_strings_survive_the_startds_parser_backslashes_and_quotes_included() -> None:
    error = 'libvirt at qemu:///session: cannot open "C:\\vm\\sock\\" \\"now\\"'
    text = cron_text(build_ad(Observations(None, libvirt_error=error)))
    parsed = old_syntax(text.splitlines()[3])
    assert parsed["VM_DISCOVERY_ERROR"] == error


def test_qemu_is_advertised_and_kvm_only_when_a_kernel_really_boots_under_it(
        ad: dict[str, str], libvirt_types: set[str]) -> None:
    hypervisors = string_list(ad["VM_HYPERVISORS"])
    assert kernel_banner_under("tcg", 60)
    assert "qemu" in hypervisors
    assert "libvirt-managed" in string_list(ad["VM_TYPES"])
    assert ad["VM_DISCOVERY_ERROR"] == "undefined"
    kvm_works = kernel_banner_under("kvm", 8)
    assert ("kvm" in hypervisors) == (kvm_works and "kvm" in libvirt_types)
    if "kvm" in libvirt_types and not kvm_works:
        assert "kvm: kvm guest hung" in ad["VM_DISCOVERY_NOTES"]  # libvirt claims it; the probe refused


def test_facts_agree_with_qemu_itself(ad: dict[str, str]) -> None:
    machines = subprocess.run([QEMU, "-machine", "help"], capture_output=True, text=True, check=True).stdout
    known = {line.split()[0] for line in machines.splitlines()[1:] if line.strip()}
    advertised = string_list(ad["VM_QEMU_ATTR_MACHINE_TYPES"])
    assert {"pc", "q35"} <= set(advertised) and set(advertised) <= known
    assert {"virtio", "e1000", "rtl8139"} <= set(string_list(ad["VM_QEMU_ATTR_NIC_MODELS"]))
    assert {"virtio", "ide", "sata"} <= set(string_list(ad["VM_QEMU_ATTR_DISK_BUSES"]))
    assert int(ad["VM_QEMU_ATTR_MAX_VCPUS"]) >= 1
    assert "x86_64" in string_list(ad["VM_QEMU_ATTR_ARCHES"])
    firmware = [json.loads(f.read_text()) for f in Path("/usr/share/qemu/firmware").glob("*.json")]
    installed = any(Path(d["mapping"]["executable"]["filename"]).exists() for d in firmware
                    if d.get("mapping", {}).get("executable"))
    assert ad["VM_QEMU_ATTR_EFI"] == ("true" if installed else "false")
    assert ad["VM_RUNNER_VERSION"] == f'"{__version__}"'


def test_the_warm_up_run_and_the_cron_run_agree_and_the_probes_are_cached(
        warm: dict[str, str], ad: dict[str, str], state_dir: Path) -> None:
    assert warm == ad
    entries = json.loads((state_dir / "probes.json").read_text())["entries"]
    boots = {key.split(":")[0]: entry["value"] for key, entry in entries.items() if key.startswith("boot-")}
    assert boots["boot-tcg"]["ok"] is True
    if "kvm" not in string_list(ad["VM_HYPERVISORS"]) and "boot-kvm" in boots:
        assert boots["boot-kvm"]["ok"] is False


def test_admin_limits_lower_what_is_advertised(uri: str, state_dir: Path, warm: dict[str, str]) -> None:
    knobs = {"_CONDOR_VMSUBMIT_MAX_VCPUS": "2", "_CONDOR_VMSUBMIT_ALLOWED_BUSES": "virtio, sata",
             "_CONDOR_VMSUBMIT_ALLOWED_NETWORKS": "default lo", "_CONDOR_VMSUBMIT_LIBVIRT_URI": uri}
    done = run_discover("--state-dir", str(state_dir), env=knobs)
    ad = parse_cron(done.stdout)
    assert ad["VM_QEMU_ATTR_MAX_VCPUS"] == "2"
    assert string_list(ad["VM_QEMU_ATTR_DISK_BUSES"]) == ["virtio", "sata"]
    # a session daemon has no active network and lo is no bridge: nothing to advertise
    assert ad["VM_QEMU_ATTR_NETWORKS"] == '""' and ad["VM_QEMU_ATTR_BRIDGES"] == '""'


def test_a_hung_libvirtd_gives_a_discovery_error_not_claims(tmp_path: Path, state_dir: Path) -> None:
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)  # connections are accepted by the kernel; nothing ever answers
    try:
        done = run_discover("--state-dir", str(state_dir), timeout=30,
                            env={"_CONDOR_VMSUBMIT_LIBVIRT_URI": f"qemu+unix:///session?socket={path}"})
    finally:
        server.close()
    ad = parse_cron(done.stdout)
    assert done.returncode == 0
    assert f"did not answer within {DEFAULT_TIMEOUT:g} s" in ad["VM_DISCOVERY_ERROR"]
    assert ad["VM_TYPES"] == '""' and ad["VM_HYPERVISORS"] == '""'
    assert not [name for name in ad if "_ATTR_" in name]


def test_without_a_runner_nothing_is_claimed(uri: str, state_dir: Path, warm: dict[str, str]) -> None:
    missing = "/nonexistent/condor_vm_runner"
    done = run_discover("--uri", uri, "--state-dir", str(state_dir),
                        env={"_CONDOR_VMSUBMIT_RUNNER": missing})
    ad = parse_cron(done.stdout)
    assert ad["VM_DISCOVERY_ERROR"] == \
        f'"no runner at {missing} (VMSUBMIT_RUNNER): jobs could not start here"'
    assert ad["VM_TYPES"] == '""' and ad["VM_HYPERVISORS"] == '""'
    assert not [name for name in ad if "_ATTR_" in name]


def test_libvirt_down_gives_its_error(tmp_path: Path, state_dir: Path) -> None:
    missing = tmp_path / "no-daemon.sock"
    done = run_discover("--state-dir", str(state_dir), "--uri", f"qemu+unix:///session?socket={missing}")
    ad = parse_cron(done.stdout)
    assert str(missing) in ad["VM_DISCOVERY_ERROR"] and "No such file" in ad["VM_DISCOVERY_ERROR"]
    assert ad["VM_HYPERVISORS"] == '""'


def _script(folder: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def test_script_managed_hypervisors(tmp_path: Path, state_dir: Path, uri: str, warm: dict[str, str]) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    _script(scripts, "qemu-direct", f'exec {sys.executable} -m condor_vmsubmit.scripts.qemu_direct "$@"\n')
    _script(scripts, "toy", '[ "$1" = discover ] || exit 3\n'
                            'echo "VM_TOY_ATTR_SLOTS = 4"\necho \'VM_TYPES = "toy-only"\'\n'
                            'echo "VM_TOY_ATTR_CMD = system(\\"x\\")"\n')
    _script(scripts, "broken", 'echo "no licence server" >&2\nexit 1\n')
    _script(scripts, "loose", "exit 0\n", mode=0o777)
    _script(scripts, "Bad.Name", "exit 0\n")
    pidfile = tmp_path / "sleeper.pid"
    _script(scripts, "sleepy", f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    done = run_discover("--uri", uri, "--state-dir", str(state_dir), "--script-dir", str(scripts))
    ad = parse_cron(done.stdout)
    assert string_list(ad["VM_TYPES"]) == ["libvirt-managed", "script-managed"]
    assert string_list(ad["VM_HYPERVISORS"]) == ["qemu", "qemu-direct", "toy"]
    assert ad["VM_TOY_ATTR_SLOTS"] == "4"
    assert "VM_TOY_ATTR_CMD" not in ad  # only literals
    assert ad["VM_QEMU_DIRECT_ATTR_VERSION"].startswith('"')
    notes = ad["VM_DISCOVERY_NOTES"]
    assert "script broken: discover exited 1: no licence server" in notes
    assert "script loose: writable by group or others" in notes
    assert "script Bad.Name: not a hypervisor name" in notes
    assert "script sleepy: discover did not finish in time" in notes
    assert "script toy: ignored output" in notes
    assert not running(int(pidfile.read_text()))  # the script's whole process group was killed


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a killed one may linger as a zombie of init)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def test_a_state_dir_too_long_for_libvirt_sockets_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60)
    done = run_discover("--state-dir", str(deep), "--uri", "test:///default")
    assert done.returncode == 3
    assert "longer than 60 characters" in done.stderr and not deep.exists()


def test_a_state_dir_open_to_others_is_refused(short_tmp: Path) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    done = run_discover("--state-dir", str(shared), "--uri", "test:///default")
    assert done.returncode == 3
    assert done.stderr.strip() == (f"condor_vm_discover: error: {shared}: the state directory is open to "
                                   "other users (want mode 0700)")


# --- the pure part, on observations made up for the cases this machine cannot show -------------

_CAPS = """<capabilities><host><cpu><arch>x86_64</arch></cpu></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>
<machine>pc</machine><domain type='qemu'/><domain type='kvm'/></arch></guest>
<guest><os_type>xen</os_type><arch name='x86_64'><machine>xenpv</machine><domain type='xen'/></arch></guest>
</capabilities>"""
_DOMCAPS = "<domainCapabilities><vcpu max='288'/><devices><disk><enum name='bus'><value>virtio</value>" \
           "</enum></disk></devices></domainCapabilities>"


def test_a_working_kvm_and_xen_from_libvirt_are_advertised_with_networks() -> None:
    answer = LibvirtAnswer(_CAPS, {"qemu": _DOMCAPS, "kvm": _DOMCAPS, "xen": _DOMCAPS}, {},
                           networks=("default", "isolated"))
    seen = Observations(answer, boot_probes={"qemu": ProbeResult(True, "ok"), "kvm": ProbeResult(True, "ok")},
                        nic_models={QEMU: ("virtio", "e1000")}, bridges=("br0",),
                        allowed_networks=("default", "br0"))
    ad = build_ad(seen)
    assert string_list(ad["VM_HYPERVISORS"]) == ["qemu", "kvm", "xen"]
    assert ad["VM_KVM_ATTR_MAX_VCPUS"] == "288"
    assert ad["VM_KVM_ATTR_NETWORKS"] == '"default"' and ad["VM_KVM_ATTR_BRIDGES"] == '"br0"'
    assert ad["VM_KVM_ATTR_NIC_MODELS"] == '"virtio,e1000"'
    assert "VM_XEN_ATTR_NIC_MODELS" not in ad and ad["VM_XEN_ATTR_MACHINE_TYPES"] == '"xenpv"'
    assert ad["VM_DISCOVERY_NOTES"] == "undefined"


def test_a_hypervisor_libvirt_cannot_describe_is_left_out_with_its_reason() -> None:
    answer = LibvirtAnswer(_CAPS, {"qemu": _DOMCAPS}, {"kvm": "the accel 'kvm' is not supported"})
    ad = build_ad(Observations(answer, boot_probes={"qemu": ProbeResult(True, "ok")},
                               scripts=(ScriptAnswer("toy", False, reason="discover exited 1"),)))
    assert string_list(ad["VM_HYPERVISORS"]) == ["qemu", "xen"]
    assert ad["VM_DISCOVERY_NOTES"] == ('"kvm: the accel \'kvm\' is not supported; '
                                        'script toy: discover exited 1"')


def test_the_probe_cache_expires_and_survives_a_rewrite(tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "probes.json", ttl=3600)
    cache.put("boot-kvm:/usr/bin/qemu:1:2", {"ok": False, "detail": "hung"})
    cache.save()
    assert ProbeCache(tmp_path / "probes.json", ttl=3600).get("boot-kvm:/usr/bin/qemu:1:2") == \
        {"ok": False, "detail": "hung"}
    assert ProbeCache(tmp_path / "probes.json", ttl=0).get("boot-kvm:/usr/bin/qemu:1:2") is None
    (tmp_path / "probes.json").write_text("{not json")
    assert ProbeCache(tmp_path / "probes.json", ttl=3600).get("boot-kvm:/usr/bin/qemu:1:2") is None


# --- the shipped configuration and documentation ------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
EXECUTE_CONFIG = REPO / "examples" / "condor_config.d" / "50-vmsubmit-execute.conf"


def test_the_example_execute_config_drives_discovery(uri: str, warm: dict[str, str], short_tmp: Path) -> None:
    """HTCondor's own config reader (htcondor2) reads the shipped file, and discovery follows it."""
    spool = short_tmp / "spool"
    spool.mkdir()
    config = short_tmp / "condor_config"
    config.write_text(f"SPOOL = {spool}\ninclude : {EXECUTE_CONFIG}\nVMSUBMIT_LIBVIRT_URI = {uri}\n")
    done = run_discover("--timeout", "30", env={"CONDOR_CONFIG": str(config)})
    ad = parse_cron(done.stdout)
    assert ad["VM_QEMU_ATTR_MAX_VCPUS"] == "8"  # VMSUBMIT_MAX_VCPUS in the example
    assert set(string_list(ad["VM_QEMU_ATTR_DISK_BUSES"])) <= {"virtio", "sata", "scsi", "ide", "fdc"}
    assert (spool / "vmsubmit-discovery" / "probes.json").exists()  # VMSUBMIT_DISCOVERY_STATE_DIR
    check = ("import htcondor2; p = htcondor2.param; print(p['STARTD_CRON_JOBLIST'].split(), "
             "p['STARTD_CRON_VMDISCOVER_EXECUTABLE'], p['STARTD_CRON_VMDISCOVER_PERIOD'], "
             "p.get('STARTD_CRON_VMDISCOVER_PREFIX'))")
    shown = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True,
                           env={**os.environ, "CONDOR_CONFIG": str(config)}).stdout
    assert shown.split("] ", 1)[1].split() == ["/usr/local/bin/condor_vm_discover", "5m", "None"]
    assert "'VMDISCOVER'" in shown


def test_the_admin_guide_lists_every_attribute_and_knob() -> None:
    guide = (REPO / "docs" / "admin-guide.md").read_text()
    for fact in NODE_ATTRIBUTES + HYPERVISOR_FACTS:
        assert f"| `{fact.name}` | {fact.classad_type} |" in guide, fact.name
    from condor_vmsubmit.checks import knobs

    for knob in knobs.ALL:
        assert f"`{knob.name}`" in guide, knob.name


def test_the_default_uri_works_for_whoever_runs_it(state_dir: Path) -> None:
    """``qemu:///session`` as the startd's cron job uses it: libvirt starts the user's daemon;
    as root, discovery starts its own in a user namespace.  Either way, in the state dir."""
    state = state_dir / "default"
    try:
        first = parse_cron(run_discover("--state-dir", str(state), "--timeout", "90").stdout)
        ad = parse_cron(run_discover("--state-dir", str(state)).stdout)
    finally:
        pidfile = state / "run" / "libvirt" / "libvirtd.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
    assert first == ad
    assert ad["VM_DISCOVERY_ERROR"] == "undefined"
    assert "qemu" in string_list(ad["VM_HYPERVISORS"])


def test_knobs_mean_the_same_to_discovery_and_to_the_policy(uri: str, state_dir: Path, warm: dict[str, str],
                                                             tmp_path: Path) -> None:
    """One parser (checks/knobs.py): ``2.0`` is 2 and ``VirtIO`` is virtio for discovery and for the
    policy; ``2.5`` stops both with the same line instead of failing every job on the node."""
    domain = tmp_path / "virtio.xml"
    domain.write_text("<domain type='qemu'><name>v</name><memory unit='MiB'>256</memory><vcpu>2</vcpu>"
                      "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
                      "<driver name='qemu' type='raw'/><source file='/images/v.img'/>"
                      "<target dev='vda' bus='virtio'/></disk></devices></domain>")
    knobs = {"_CONDOR_VMSUBMIT_MAX_VCPUS": "2.0", "_CONDOR_VMSUBMIT_ALLOWED_BUSES": "VirtIO SATA",
             "_CONDOR_VMSUBMIT_LIBVIRT_URI": uri}
    ad = parse_cron(run_discover("--state-dir", str(state_dir), env=knobs).stdout)
    assert ad["VM_QEMU_ATTR_MAX_VCPUS"] == "2"
    assert string_list(ad["VM_QEMU_ATTR_DISK_BUSES"]) == ["virtio", "sata"]
    env = {**os.environ, **knobs}
    check = subprocess.run(["condor_vmsubmit", "policy-check", str(domain)], capture_output=True, text=True, env=env)
    assert (check.returncode, check.stdout.splitlines()[0]) == (0, "policy: accepted"), check.stderr

    bad = {**knobs, "_CONDOR_VMSUBMIT_MAX_VCPUS": "2.5"}
    discovered = run_discover("--state-dir", str(state_dir), env=bad)
    checked = subprocess.run(["condor_vmsubmit", "policy-check", str(domain)], capture_output=True, text=True,
                             env={**os.environ, **bad})
    line = "VMSUBMIT_MAX_VCPUS = '2.5' is not a positive whole number"
    assert discovered.returncode == checked.returncode == 3
    assert line in discovered.stderr and line in checked.stderr and not discovered.stdout


def _stop_daemon(state: Path) -> None:
    pidfile = state / "run" / "libvirt" / "libvirtd.pid"
    if pidfile.exists():
        os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_a_run_too_slow_for_libvirt_keeps_what_was_verified_for_a_bounded_time(short_tmp: Path) -> None:
    """A good run, then runs whose session daemon is cold (its first start takes seconds, more
    than the 1.3 s budget): the node stays in matchmaking with the good run's facts and their
    age, until VMSUBMIT_DISCOVERY_KEEP is over."""
    good, slow, late = (short_tmp / name for name in ("good", "slow", "late"))
    try:
        verified = parse_cron(run_discover("--state-dir", str(good), "--timeout", "90").stdout)
        assert "qemu" in string_list(verified["VM_HYPERVISORS"]) and verified["VM_DISCOVERY_AGE"] == "0"
        for state in (slow, late):
            state.mkdir(mode=0o700)
            shutil.copy(good / "verified.json", state / "verified.json")
        ad = parse_cron(run_discover("--state-dir", str(slow)).stdout)
        late_ad = parse_cron(run_discover("--state-dir", str(late),
                                          env={"_CONDOR_VMSUBMIT_DISCOVERY_KEEP": "0"}).stdout)
    finally:
        for state in (good, slow, late):
            _stop_daemon(state)
    assert ad["VM_HYPERVISORS"] == verified["VM_HYPERVISORS"] and ad["VM_TYPES"] == verified["VM_TYPES"]
    assert all(ad[name] == value for name, value in verified.items() if "_ATTR_" in name)
    assert ad["VM_DISCOVERY_ERROR"] == "undefined"
    assert f"did not answer within {DEFAULT_TIMEOUT:g} s" in ad["VM_DISCOVERY_NOTES"]
    assert "qemu: kept as verified" in ad["VM_DISCOVERY_NOTES"] and int(ad["VM_DISCOVERY_AGE"]) >= 0
    # the slow run keeps the record for the next one, no younger than it was
    kept = json.loads((slow / "verified.json").read_text())["hypervisors"]["qemu"]
    assert kept["at"] == json.loads((good / "verified.json").read_text())["hypervisors"]["qemu"]["at"]
    # past the bound a slow run claims nothing, as before
    assert late_ad["VM_HYPERVISORS"] == '""' and "did not answer" in late_ad["VM_DISCOVERY_ERROR"]


def test_kept_hypervisors_join_the_ad_but_never_without_a_runner() -> None:
    seen = Verified("libvirt-managed", {"VM_QEMU_ATTR_MAX_VCPUS": "255"}, at=1000.0)
    toy = Verified("script-managed", {"VM_TOY_ATTR_X": "1"}, at=1060.0)
    slow = Observations(None, libvirt_error="libvirt at qemu:///session did not answer within 1.3 s",
                        libvirt_timed_out=True,
                        scripts=(ScriptAnswer("toy", False, reason="discover did not finish in time", timed_out=True),))
    kept = keepable({"qemu": seen, "toy": toy}, slow, now=1100.0, keep=1800)
    ad = build_ad(slow, kept, now=1100.0)
    assert string_list(ad["VM_HYPERVISORS"]) == ["qemu", "toy"]
    assert string_list(ad["VM_TYPES"]) == ["libvirt-managed", "script-managed"]
    assert ad["VM_QEMU_ATTR_MAX_VCPUS"] == "255" and ad["VM_TOY_ATTR_X"] == "1"
    assert ad["VM_DISCOVERY_AGE"] == "100" and ad["VM_DISCOVERY_ERROR"] == "undefined"
    assert ad["VM_DISCOVERY_NOTES"] == ('"libvirt at qemu:///session did not answer within 1.3 s; '
                                        'script toy: discover did not finish in time; '
                                        'qemu: kept as verified 100 s ago; toy: kept as verified 40 s ago"')
    assert verified(ad, slow, kept, now=1100.0) == kept  # their age goes on
    # a script that refused (not slow) is not kept; nor anything once the runner is gone
    refused = Observations(None, scripts=(ScriptAnswer("toy", False, reason="discover exited 1"),))
    assert keepable({"toy": toy}, refused, 1100.0, 1800) == {}
    gone = Observations(None, libvirt_error="x", libvirt_timed_out=True, runner_error="no runner")
    assert keepable({"qemu": seen}, gone, 1100.0, 1800) == {}
    assert build_ad(gone, {"qemu": seen}, 1100.0)["VM_HYPERVISORS"] == '""'
