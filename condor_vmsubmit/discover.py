"""``condor_vm_discover``: what this execute node can run, printed for the startd's cron.

Output (STARTD_CRON format: ``Attr = value`` lines, ClassAd literals, the ad ended by ``-``)::

    VM_TYPES = "libvirt-managed,script-managed"
    VM_HYPERVISORS = "qemu,qemu-direct"
    VM_RUNNER_VERSION = "0.1.0"
    VM_DISCOVERY_ERROR = undefined
    VM_DISCOVERY_NOTES = "kvm: kvm guest hung entering protected mode"
    VM_QEMU_ATTR_MAX_VCPUS = 255
    ...
    -

The attributes are listed in :data:`NODE_ATTRIBUTES` and :data:`HYPERVISOR_FACTS`; the
translator (:mod:`condor_vmsubmit.translate`) builds Requirements from the same names.

A hypervisor is advertised only when it really runs a guest: libvirt must list it and
answer its domain capabilities, and ``qemu`` / ``kvm`` must boot the probe firmware of
:mod:`condor_vmsubmit.kvmprobe` under TCG / KVM.  Script-managed hypervisors are the
admin's executables in ``VMSUBMIT_SCRIPT_DIR`` whose ``discover`` action exits 0.

Timing: every probe runs under one deadline (``--timeout``, 1.3 s by default) so the
program ends in under 2 s even when libvirtd hangs; boot-probe and ``-nic model=help``
answers are cached in the state directory for ``VMSUBMIT_DISCOVERY_PROBE_TTL`` seconds.
A hypervisor whose check did not end in time (a cold session daemon, a loaded host) stays
advertised as the last run that verified it saw it, for ``VMSUBMIT_DISCOVERY_KEEP`` seconds
(``verified.json`` in the state directory; ``VM_DISCOVERY_AGE`` says how old that is).
The probing functions (``probe_*``, ``main``) are the edges; everything from their raw
answers to the printed text is pure (``guest_types``, ``build_ad``, ``cron_text``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import click
from lxml import etree

from . import __version__, jobcontract
from .checks import knobs
from .classads import LIBVIRT_MANAGED, SCRIPT_MANAGED, attribute_part, hypervisor_attr
from .cli.common import CONTEXT_SETTINGS, reports_errors
from .config import config_source, digest, vmsubmit_knobs
from .errors import InputError
from .kvmprobe import PROBE_TIMEOUT, ProbeResult, boot_probe, probe_rom
from .runner.screen import can_make_video
from .runner.shares import virtiofsd
from .staged import list_images

T = TypeVar("T")
FactValue = int | bool | tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    """One advertised attribute: its name, ClassAd type and meaning (docs/admin-guide.md)."""

    name: str
    classad_type: str
    meaning: str


NODE_ATTRIBUTES = (
    Fact("VM_TYPES", "string list", "libvirt-managed when libvirt runs at least one hypervisor here; "
                                    "script-managed when at least one admin script discovers"),
    Fact("VM_HYPERVISORS", "string list", "every hypervisor that really runs a guest here: libvirt domain "
                                          "types (kvm, qemu, xen ...) and script-managed names"),
    Fact("VM_RUNNER_VERSION", "string", "version of condor_vmsubmit (and so of condor_vm_runner) here"),
    Fact("VM_DISCOVERY_ERROR", "string", "why less is claimed than may be there: libvirt could not be "
                                         "asked, or no runner is installed (undefined when all is well)"),
    Fact("VM_DISCOVERY_NOTES", "string", "why a hypervisor or script was left out (undefined when none)"),
    Fact("VM_IMAGES", "string list", "names of the base images an admin staged in VMSUBMIT_IMAGE_DIR "
                                     "(docs/staged-images.md); empty when none"),
    Fact("VM_CONDOR_CONFIG", "string", "the HTCondor configuration file the node's daemons read (CONDOR_CONFIG, "
                                       "else HTCondor's search): the runner reads the same, as a job has no "
                                       "CONDOR_CONFIG"),
    Fact("VM_CONFIG_DIGEST", "string", "digest of every VMSUBMIT_* knob as discovery saw them: the runner holds "
                                       "a job rather than run it when it sees other values"),
    Fact("VM_DISCOVERY_AGE", "integer", "seconds since what is advertised was verified: 0 when this run "
                                        "checked it all; more when a run too slow to check a hypervisor "
                                        "kept an earlier run's verdict (VMSUBMIT_DISCOVERY_KEEP)"),
    Fact("VM_SCREEN_VIDEO", "boolean", "ffmpeg is installed: a job's --capture-screen also gives a video "
                                       "(VP8 in WebM); frames are captured either way"),
)

# VM_<HV>_ATTR_<name> for every libvirt hypervisor advertised (scripts print their own).
HYPERVISOR_FACTS = (
    Fact("MAX_VCPUS", "integer", "most vCPUs one guest may have: domain capabilities of the default "
                                 "machine type, lowered to VMSUBMIT_MAX_VCPUS when set"),
    Fact("MACHINE_TYPES", "string list", "machine types of the host architecture, aliases included"),
    Fact("ARCHES", "string list", "guest architectures"),
    Fact("EFI", "boolean", "UEFI firmware is installed and libvirt can use it"),
    Fact("DISK_BUSES", "string list", "disk buses (domain capabilities), within VMSUBMIT_ALLOWED_BUSES"),
    Fact("NIC_MODELS", "string list", "NIC models in libvirt's spelling, from the emulator's "
                                      "-nic model=help (QEMU-based hypervisors only)"),
    Fact("VIRTIOFS", "boolean", "virtiofs shared folders: QEMU supports them and the runner can start "
                                "virtiofsd (installed, and discovery runs as root as such jobs do; "
                                "others share over 9p)"),
    Fact("NETWORKS", "string list", "active libvirt networks named in VMSUBMIT_ALLOWED_NETWORKS"),
    Fact("BRIDGES", "string list", "host bridges named in VMSUBMIT_ALLOWED_NETWORKS"),
)

DEFAULT_URI = "qemu:///session"
DEFAULT_TIMEOUT = 1.3        # seconds for the whole discovery; Python's start-up comes on top
DEFAULT_PROBE_TTL = 3600     # seconds a cached boot-probe or NIC list stays valid
# The knobs discovery reads (their names, types and case: checks/knobs.py).
KNOBS = (knobs.LIBVIRT_URI, knobs.DISCOVERY_STATE_DIR, knobs.SCRIPT_DIR, knobs.DISCOVERY_PROBE_TTL,
         knobs.ALLOWED_NETWORKS, knobs.ALLOWED_BUSES, knobs.MAX_VCPUS, knobs.RUNNER, knobs.IMAGE_DIR,
         knobs.DISCOVERY_KEEP)

# The QEMU-based domain types: each must boot the probe firmware under its accelerator.
PROBED_ACCELERATORS = {"qemu": "tcg", "kvm": "kvm"}
PROBE_ARCHES = ("x86_64", "i686")
# libvirt gives root only the system daemon, whatever the URI says; as root, discovery runs a
# session libvirtd of its own in a user namespace that maps root to this uid (as the runner does).
LIBVIRTD = "/usr/sbin/libvirtd"
NAMESPACE_UID = 1000
PRIVATE_DAEMON_IDLE = 600    # seconds that daemon waits for the next run before it exits
# libvirt probes QEMU through STATE/config/libvirt/qemu/lib/qmp-XXXXXX/qmp.monitor (47 characters
# after STATE), and a UNIX socket path holds at most 107.
MAX_STATE_DIR_CHARS = 60
_SCRIPT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# --- what the edges saw -----------------------------------------------------------------------

@dataclass(frozen=True)
class LibvirtAnswer:
    """libvirt's raw answers: capabilities, domain capabilities per domain type (or the error
    libvirt gave for that type) and the names of its active networks."""

    capabilities: str
    domain_capabilities: Mapping[str, str] = field(default_factory=dict)
    domain_errors: Mapping[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScriptAnswer:
    """One admin script's ``discover``: available or not, its stdout and why not."""

    hypervisor: str
    available: bool
    stdout: str = ""
    reason: str = ""
    timed_out: bool = False                  # killed at the deadline: undecided, not refused


@dataclass(frozen=True)
class Observations:
    """Everything the probes found; :func:`build_ad` turns it into the machine ad."""

    libvirt: LibvirtAnswer | None
    libvirt_error: str | None = None
    libvirt_timed_out: bool = False          # libvirt did not answer in time: undecided, not refused
    runner_error: str | None = None          # why no job could start here at all
    boot_probes: Mapping[str, ProbeResult] = field(default_factory=dict)   # domain type -> result
    nic_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # emulator -> models
    virtiofsd: bool = False
    bridges: tuple[str, ...] = ()            # allowed names that are host bridges
    allowed_networks: tuple[str, ...] = ()
    allowed_buses: tuple[str, ...] = ()
    max_vcpus: int | None = None             # the admin's VMSUBMIT_MAX_VCPUS
    scripts: tuple[ScriptAnswer, ...] = ()
    version: str = __version__
    images: tuple[str, ...] = ()             # staged image names (VMSUBMIT_IMAGE_DIR)
    undecided: frozenset[str] = frozenset()  # domain types whose boot probe did not end in time
    config_source: str | None = None         # the HTCondor configuration file read
    config_digest: str = ""                  # of the VMSUBMIT_* knobs (config.digest)
    screen_video: bool = False               # ffmpeg makes capture videos here


@dataclass(frozen=True)
class Verified:
    """A hypervisor as the last run that could check it saw it: VM_TYPE, facts, and when."""

    vm_type: str
    facts: Mapping[str, str]                 # VM_<HV>_ATTR_<NAME> -> ClassAd literal
    at: float                                # seconds since the epoch


@dataclass(frozen=True)
class GuestType:
    """One (architecture, domain type) pair libvirt can run, from its capabilities."""

    arch: str
    domain_type: str
    emulator: str | None
    machines: tuple[str, ...]


# --- pure: from raw answers to the ad ---------------------------------------------------------

def host_arch(capabilities: str) -> str | None:
    """The host CPU architecture in libvirt's capabilities XML."""
    return etree.fromstring(capabilities.encode()).findtext("host/cpu/arch")


def guest_types(capabilities: str) -> tuple[GuestType, ...]:
    """Every (arch, domain type) of full-virtualization and Xen guests in the capabilities XML.

    >>> caps = '''<capabilities><guest><os_type>hvm</os_type><arch name="x86_64">
    ...   <emulator>/usr/bin/qemu-system-x86_64</emulator>
    ...   <machine canonical="pc-i440fx-7.2">pc</machine><machine>q35</machine>
    ...   <domain type="qemu"/><domain type="kvm"><machine>pc-kvm</machine></domain>
    ... </arch></guest></capabilities>'''
    >>> [(g.domain_type, g.machines) for g in guest_types(caps)]
    [('qemu', ('pc', 'pc-i440fx-7.2', 'q35')), ('kvm', ('pc-kvm',))]
    """
    found = []
    root = etree.fromstring(capabilities.encode())
    for guest in root.iterfind("guest"):
        if guest.findtext("os_type") not in ("hvm", "xen"):
            continue
        for arch in guest.iterfind("arch"):
            for domain in arch.iterfind("domain"):
                machine_elements = domain.findall("machine") or arch.findall("machine")
                found.append(GuestType(
                    arch=arch.get("name", ""),
                    domain_type=domain.get("type", ""),
                    emulator=domain.findtext("emulator") or arch.findtext("emulator"),
                    machines=_machine_names(machine_elements),
                ))
    return tuple(found)


def _machine_names(elements: Iterable[etree._Element]) -> tuple[str, ...]:
    names: list[str] = []
    for element in elements:
        for name in (element.text, element.get("canonical")):
            if name and name.strip() not in names:
                names.append(name.strip())
    return tuple(names)


def domain_facts(domcaps: str) -> dict[str, FactValue]:
    """MAX_VCPUS, EFI, DISK_BUSES and whether QEMU has virtiofs, from domain capabilities XML.

    >>> domain_facts('''<domainCapabilities><vcpu max="255"/><os supported="yes">
    ...   <enum name="firmware"><value>efi</value></enum></os><devices>
    ...   <disk supported="yes"><enum name="bus"><value>ide</value><value>virtio</value></enum></disk>
    ...   <filesystem supported="yes"><enum name="driverType"><value>path</value></enum></filesystem>
    ... </devices></domainCapabilities>''')
    {'MAX_VCPUS': 255, 'EFI': True, 'DISK_BUSES': ('ide', 'virtio'), 'VIRTIOFS': False}
    """
    root = etree.fromstring(domcaps.encode())
    facts: dict[str, FactValue] = {}
    vcpu_max = root.find("vcpu")
    if vcpu_max is not None and (vcpu_max.get("max") or "").isdigit():
        facts["MAX_VCPUS"] = int(vcpu_max.get("max", "0"))
    firmware = _enum(root, "os/enum[@name='firmware']")
    loaders = tuple(v.text for v in root.iterfind("os/loader/value") if v.text)
    # libvirt lists 'efi' when a firmware descriptor names an installed image; older versions
    # only list loader images.
    facts["EFI"] = "efi" in firmware or (not root.findall("os/enum[@name='firmware']") and bool(loaders))
    facts["DISK_BUSES"] = _enum(root, "devices/disk/enum[@name='bus']")
    facts["VIRTIOFS"] = "virtiofs" in _enum(root, "devices/filesystem/enum[@name='driverType']")
    return facts


def _enum(root: etree._Element, path: str) -> tuple[str, ...]:
    return tuple(v.text.strip() for v in root.iterfind(f"{path}/value") if v.text and v.text.strip())


def nic_models(model_help: str) -> tuple[str, ...]:
    """NIC models from ``qemu-system-* -nic model=help``, in libvirt's spelling.

    >>> nic_models("Supported NIC models:\\ne1000\\nvirtio-net-pci\\nvirtio-net-pci-transitional\\n")
    ('e1000', 'virtio', 'virtio-transitional')
    """
    models = []
    for line in model_help.splitlines():
        name = line.strip()
        if not name or name.endswith(":") or " " in name:
            continue
        if name.startswith("virtio-net-pci"):
            name = "virtio" + name[len("virtio-net-pci"):]
        models.append(name)
    return tuple(models)


_LITERAL = re.compile(r'-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|undefined|"([^"\\\n]|\\[^\n])*"',
                      re.IGNORECASE)


def script_facts(hypervisor: str, stdout: str) -> tuple[dict[str, str], list[str]]:
    """The ``VM_<HV>_ATTR_<NAME> = literal`` lines of a script's discover output, and what was ignored.

    A script may only describe its own hypervisor, and only with ClassAd literals.

    >>> script_facts("qemu-direct", 'VM_QEMU_DIRECT_ATTR_EFI = true\\nVM_TYPES = "x"\\nhello\\n')
    ({'VM_QEMU_DIRECT_ATTR_EFI': 'true'}, ['VM_TYPES = "x"', 'hello'])
    """
    prefix = f"VM_{attribute_part(hypervisor)}_ATTR_"
    facts: dict[str, str] = {}
    ignored: list[str] = []
    for line in stdout.splitlines():
        name, equals, value = (part.strip() for part in line.partition("="))
        if not line.strip():
            continue
        if (equals and name.upper().startswith(prefix) and re.fullmatch(r"[A-Za-z0-9_]+", name)
                and len(name) > len(prefix) and _LITERAL.fullmatch(value)):
            facts[name.upper()] = value
        else:
            ignored.append(line.strip())
    return facts, ignored


def usable_hypervisors(observations: Observations) -> tuple[dict[str, GuestType], list[str]]:
    """The libvirt domain types that really run guests (host-arch guest type of each), and notes
    on the ones left out."""
    answer = observations.libvirt
    if answer is None:
        return {}, []
    arch = host_arch(answer.capabilities)
    usable: dict[str, GuestType] = {}
    notes: list[str] = []
    if not any(guest.arch == arch for guest in guest_types(answer.capabilities)):
        notes.append(f"libvirt lists no hypervisor for {arch} guests (is qemu-system installed?)")
    for guest in guest_types(answer.capabilities):
        kind = guest.domain_type
        if guest.arch != arch or kind in usable:
            continue
        if kind in answer.domain_errors:
            notes.append(f"{kind}: {answer.domain_errors[kind]}")
            continue
        probe = observations.boot_probes.get(kind)
        if kind in PROBED_ACCELERATORS and (probe is None or not probe.ok):
            notes.append(f"{kind}: {probe.detail if probe else f'no boot probe for {guest.arch} hosts'}")
            continue
        usable[kind] = guest
    return usable, notes


def hypervisor_facts(kind: str, guest: GuestType, answer: LibvirtAnswer,
                     observations: Observations) -> dict[str, str]:
    """``VM_<HV>_ATTR_<NAME>`` → ClassAd literal for one usable libvirt hypervisor."""
    facts: dict[str, FactValue] = {}
    if kind in answer.domain_capabilities:
        facts.update(domain_facts(answer.domain_capabilities[kind]))
    most, buses = facts.get("MAX_VCPUS"), facts.get("DISK_BUSES")
    if observations.max_vcpus is not None and isinstance(most, int):
        facts["MAX_VCPUS"] = min(most, observations.max_vcpus)
    if observations.allowed_buses and isinstance(buses, tuple):
        facts["DISK_BUSES"] = tuple(bus for bus in buses if bus in observations.allowed_buses)
    facts["VIRTIOFS"] = bool(facts.get("VIRTIOFS")) and observations.virtiofsd
    facts["MACHINE_TYPES"] = tuple(sorted(guest.machines))
    arches = {other.arch for other in guest_types(answer.capabilities) if other.domain_type == kind}
    facts["ARCHES"] = tuple(sorted(arches))
    if kind in PROBED_ACCELERATORS and guest.emulator in observations.nic_models:
        facts["NIC_MODELS"] = observations.nic_models[guest.emulator]
    facts["NETWORKS"] = tuple(n for n in observations.allowed_networks if n in answer.networks)
    facts["BRIDGES"] = tuple(b for b in observations.allowed_networks if b in observations.bridges)
    order = [fact.name for fact in HYPERVISOR_FACTS]
    return {hypervisor_attr(kind, name): classad_literal(facts[name]) for name in order if name in facts}


def build_ad(observations: Observations, kept: Mapping[str, Verified] | None = None,
             now: float = 0.0) -> dict[str, str]:
    """The machine ad: attribute name → ClassAd literal, node attributes first.

    ``kept``: hypervisors this run could not check in time, advertised as verified earlier
    (:func:`keepable`); ``now`` dates them.
    """
    kept = {} if observations.runner_error else dict(kept or {})
    usable, notes = usable_hypervisors(observations)
    hypervisors = list(usable)
    types = [LIBVIRT_MANAGED] if usable else []
    script_ads: dict[str, str] = {}
    for script in observations.scripts:
        if not script.available:
            notes.append(f"script {script.hypervisor}: {script.reason}")
            continue
        facts, ignored = script_facts(script.hypervisor, script.stdout)
        if ignored:
            notes.append(f"script {script.hypervisor}: ignored output {ignored[0]!r}")
        hypervisors.append(script.hypervisor)
        script_ads.update(facts)
    if any(script.available for script in observations.scripts):
        types.append(SCRIPT_MANAGED)
    if observations.runner_error:  # no job could start here, whatever the hypervisors can do
        usable, hypervisors, types, script_ads = {}, [], [], {}
    libvirt_error = observations.libvirt_error
    for name, entry in kept.items():
        hypervisors.append(name)
        types = [t for t in (LIBVIRT_MANAGED, SCRIPT_MANAGED) if t in types or t == entry.vm_type]
        notes.append(f"{name}: kept as verified {now - entry.at:.0f} s ago")
        if entry.vm_type == LIBVIRT_MANAGED and libvirt_error and observations.libvirt_timed_out:
            notes.insert(0, libvirt_error)  # not less claimed: a note, no longer an error
            libvirt_error = None
    errors = [error for error in (observations.runner_error, libvirt_error) if error]
    ad = {
        "VM_TYPES": classad_literal(tuple(types)),
        "VM_HYPERVISORS": classad_literal(tuple(hypervisors)),
        "VM_RUNNER_VERSION": classad_literal(observations.version),
        "VM_DISCOVERY_ERROR": classad_literal("; ".join(errors) if errors else None),
        "VM_DISCOVERY_NOTES": classad_literal("; ".join(notes) if notes else None),
        "VM_IMAGES": classad_literal(observations.images),
        "VM_CONDOR_CONFIG": classad_literal(observations.config_source),
        "VM_CONFIG_DIGEST": classad_literal(observations.config_digest),
        "VM_DISCOVERY_AGE": classad_literal(max((int(now - e.at) for e in kept.values()), default=0)),
        "VM_SCREEN_VIDEO": classad_literal(observations.screen_video),
    }
    if observations.libvirt is not None:
        for kind, guest in usable.items():
            ad.update(hypervisor_facts(kind, guest, observations.libvirt, observations))
    ad.update(script_ads)
    for entry in kept.values():
        ad.update(entry.facts)
    return ad


def undecided(name: str, entry: Verified, observations: Observations) -> bool:
    """Whether this run could not check ``name`` in time (rather than found it unusable)."""
    if entry.vm_type == LIBVIRT_MANAGED:
        return observations.libvirt_timed_out or name in observations.undecided
    return any(script.hypervisor == name and script.timed_out for script in observations.scripts)


def keepable(record: Mapping[str, Verified], observations: Observations, now: float,
             keep: float) -> dict[str, Verified]:
    """The hypervisors of ``record`` this run could not check in time, verified at most ``keep``
    seconds ago: they stay advertised.

    >>> seen = Verified("libvirt-managed", {"VM_QEMU_ATTR_EFI": "true"}, at=1000.0)
    >>> slow = Observations(None, libvirt_error="libvirt did not answer", libvirt_timed_out=True)
    >>> list(keepable({"qemu": seen}, slow, now=1100.0, keep=1800)), keepable({"qemu": seen}, slow, 3000.0, 1800)
    (['qemu'], {})
    >>> keepable({"qemu": seen}, Observations(None, libvirt_error="connection refused"), 1100.0, 1800)
    {}
    """
    if observations.runner_error:
        return {}
    return {name: entry for name, entry in record.items()
            if undecided(name, entry, observations) and 0 <= now - entry.at <= keep}


def verified(ad: Mapping[str, str], observations: Observations, kept: Mapping[str, Verified],
             now: float) -> dict[str, Verified]:
    """What the next run may keep: the hypervisors this run verified (with their facts from
    ``ad``) and the ``kept`` ones, still as old as they were."""
    if observations.runner_error:
        return {}
    found = {name: LIBVIRT_MANAGED for name in usable_hypervisors(observations)[0]}
    found.update({script.hypervisor: SCRIPT_MANAGED for script in observations.scripts if script.available})
    record = dict(kept)
    for name, vm_type in found.items():
        prefix = f"VM_{attribute_part(name)}_ATTR_"
        record[name] = Verified(vm_type, {k: v for k, v in ad.items() if k.startswith(prefix)}, now)
    return record


def classad_literal(value: str | int | bool | tuple[str, ...] | None) -> str:
    r"""A literal in the old ClassAd syntax the startd reads cron output in: tuples become comma
    string lists, None undefined; in strings only ``"`` is escaped (a backslash stays itself).

    >>> print(classad_literal('say "hi" to C:\\temp'))
    "say \"hi\" to C:\temp"
    >>> [classad_literal(v) for v in (3, False, ("ide", "virtio"), None)]
    ['3', 'false', '"ide,virtio"', 'undefined']
    """
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        value = ",".join(value)
    text = " ".join(value.split())  # one line, whatever the source said
    return '"' + text.replace('"', '\\"') + '"'


def cron_text(ad: Mapping[str, str]) -> str:
    """STARTD_CRON output: ``Attr = value`` lines, then ``-`` to end the ad.

    >>> print(cron_text({"VM_TYPES": '"script-managed"'}), end="")
    VM_TYPES = "script-managed"
    -
    """
    return "".join(f"{name} = {value}\n" for name, value in ad.items()) + "-\n"


# --- edges: configuration, state, libvirt, QEMU, scripts --------------------------------------

@dataclass(frozen=True)
class Settings:
    """Where to look and how long to wait (command line over knobs over defaults)."""

    uri: str
    state_dir: Path
    script_dir: Path | None
    runner: Path
    timeout: float
    probe_ttl: float
    allowed_networks: tuple[str, ...] = ()
    allowed_buses: tuple[str, ...] = ()
    max_vcpus: int | None = None
    image_dir: str | None = None             # VMSUBMIT_IMAGE_DIR
    keep: float = knobs.DISCOVERY_KEEP.default  # VMSUBMIT_DISCOVERY_KEEP


def default_state_dir() -> Path:
    """A per-user folder in the temp directory: libvirt's session files and the probe cache."""
    return Path(tempfile.gettempdir()) / f"condor_vm_discover-{os.geteuid()}"


def prepare_state_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or check that an existing one is ours and private."""
    if len(str(path)) > MAX_STATE_DIR_CHARS:
        raise InputError(f"the state directory path is longer than {MAX_STATE_DIR_CHARS} characters: "
                         "libvirt's sockets in it would not fit a UNIX socket path", path=path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as error:
        raise InputError(f"cannot create the state directory: {error.strerror}", path=path) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise InputError("the state directory is not a directory owned by this user", path=path)
    if info.st_mode & 0o077:
        raise InputError("the state directory is open to other users (want mode 0700)", path=path)
    for sub in ("runtime", "config", "cache"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    return path


def session_environment(state_dir: Path) -> dict[str, str]:
    """XDG folders that give ``qemu:///session`` a private daemon and caches under ``state_dir``."""
    return {"XDG_RUNTIME_DIR": str(state_dir / "runtime"), "XDG_CONFIG_HOME": str(state_dir / "config"),
            "XDG_CACHE_HOME": str(state_dir / "cache")}


def libvirt_uri(uri: str, state_dir: Path, deadline: Deadline) -> str:
    """The URI to ask.  For ``qemu:///session`` libvirt starts the user's daemon by itself, but
    not for root: there, start (or reuse) a session libvirtd of our own and name its socket."""
    if uri != DEFAULT_URI or os.geteuid() != 0:
        return uri
    socket_file = state_dir / "runtime" / "libvirt" / "libvirt-sock"
    log_file = state_dir / "libvirtd.log"
    if not listening(socket_file):
        with log_file.open("ab") as log:
            daemon = subprocess.Popen(
                ["unshare", "--user", f"--map-user={NAMESPACE_UID}", f"--map-group={NAMESPACE_UID}",
                 LIBVIRTD, "--timeout", str(PRIVATE_DAEMON_IDLE)],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(state_dir), "LANG": "C",
                     **session_environment(state_dir)},
                cwd=state_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        while not listening(socket_file):
            if daemon.poll() is not None:
                lines = log_file.read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"libvirtd exited ({lines[-1] if lines else daemon.returncode}); "
                                   f"see {log_file}")
            if deadline.left() <= 0:
                raise TimeoutError("the session libvirtd is still starting")
            time.sleep(0.02)
    return f"qemu+unix:///session?socket={socket_file}"


VERIFIED_FILE = "verified.json"


def load_verified(path: Path, uri: str) -> dict[str, Verified]:
    """What earlier runs verified against the libvirt at ``uri`` (nothing for another URI, or
    when the file is missing or unreadable)."""
    try:
        saved = json.loads(path.read_text())
        if saved.get("uri") != uri:
            return {}
        return {name: Verified(str(entry["type"]), {str(k): str(v) for k, v in entry["facts"].items()},
                               float(entry["at"]))
                for name, entry in saved["hypervisors"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def save_verified(path: Path, uri: str, record: Mapping[str, Verified]) -> None:
    """Keep ``record`` for the next run (replaced whole: two runs may overlap)."""
    entries = {name: {"type": e.vm_type, "facts": dict(e.facts), "at": e.at} for name, e in record.items()}
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps({"uri": uri, "hypervisors": entries}, indent=1))
    partial.replace(path)


def listening(socket_file: Path) -> bool:
    """Whether a server accepts connections on the UNIX socket ``socket_file``."""
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(socket_file))
        except OSError:
            return False
    return True


class Deadline:
    """Seconds left until a fixed moment."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def in_thread(function: Callable[[], T]) -> Callable[[float], tuple[bool, T | BaseException | None]]:
    """Start ``function`` in a daemon thread; the returned waiter gives ``(finished, result)``.

    A call stuck in C (a hung libvirtd) cannot be interrupted; the daemon thread is simply
    abandoned when the program exits.
    """
    box: list[T | BaseException] = []

    def run() -> None:
        try:
            box.append(function())
        except BaseException as error:  # handed to the waiter
            box.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait(timeout: float) -> tuple[bool, T | BaseException | None]:
        thread.join(timeout)
        return (True, box[0]) if box else (False, None)

    return wait


def probe_libvirt(uri: str) -> LibvirtAnswer:
    """Ask libvirt at ``uri`` for its capabilities, per-type domain capabilities and networks."""
    import libvirt

    libvirt.registerErrorHandler(lambda _context, _error: None, None)  # we report errors ourselves
    connection = libvirt.open(uri)
    try:
        capabilities = connection.getCapabilities()
        arch = host_arch(capabilities)
        domcaps: dict[str, str] = {}
        errors: dict[str, str] = {}
        for guest in guest_types(capabilities):
            if guest.arch != arch or guest.domain_type in domcaps or guest.domain_type in errors:
                continue
            try:
                domcaps[guest.domain_type] = connection.getDomainCapabilities(
                    None, guest.arch, None, guest.domain_type, 0)
            except libvirt.libvirtError as error:
                errors[guest.domain_type] = " ".join(str(error).split())
        try:
            networks = tuple(connection.listNetworks())
        except libvirt.libvirtError:
            networks = ()
        return LibvirtAnswer(capabilities, domcaps, errors, networks)
    finally:
        connection.close()


class ProbeCache:
    """Expensive answers (boot probes, NIC lists) kept in a JSON file for ``ttl`` seconds,
    keyed by what they depend on (the emulator's path, size and modification time)."""

    def __init__(self, path: Path, ttl: float):
        self.path, self.ttl, self.changed = path, ttl, False
        try:
            self.entries: dict[str, dict] = json.loads(path.read_text()).get("entries", {})
        except (OSError, ValueError, AttributeError):
            self.entries = {}

    def get(self, key: str) -> object | None:
        entry = self.entries.get(key)
        if isinstance(entry, dict) and time.time() - entry.get("at", 0) < self.ttl:
            return entry.get("value")
        return None

    def put(self, key: str, value: object) -> None:
        self.entries[key] = {"at": time.time(), "value": value}
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # two runs may overlap
        partial.write_text(json.dumps({"entries": self.entries}, indent=1))
        partial.replace(self.path)


def emulator_key(kind: str, emulator: str) -> str | None:
    """A cache key that changes when the emulator binary does (None when it is missing)."""
    try:
        info = os.stat(emulator)
    except OSError:
        return None
    return f"{kind}:{emulator}:{info.st_size}:{info.st_mtime_ns}"


def probe_qemu(answer: LibvirtAnswer, state_dir: Path, cache: ProbeCache, deadline: Deadline
               ) -> tuple[dict[str, ProbeResult], dict[str, tuple[str, ...]], frozenset[str]]:
    """Boot-probe the QEMU-based domain types and list each emulator's NIC models, in parallel,
    from the cache when it has them; also the types whose probe the deadline cut short."""
    arch = host_arch(answer.capabilities)
    emulators = {g.domain_type: str(g.emulator) for g in guest_types(answer.capabilities)
                 if g.arch == arch and g.domain_type in PROBED_ACCELERATORS and g.emulator}
    rom = state_dir / "probe.rom"
    if not rom.exists() or rom.read_bytes() != probe_rom():
        rom.write_bytes(probe_rom())
    timeout = min(PROBE_TIMEOUT, deadline.left())
    results: dict[str, ProbeResult] = {}
    booting = {}
    for kind, emulator in emulators.items():
        if arch not in PROBE_ARCHES:
            continue  # no probe firmware for this architecture: not advertised
        accel = PROBED_ACCELERATORS[kind]
        key = emulator_key("boot-" + accel, emulator)
        cached = cache.get(key) if key else None
        if isinstance(cached, dict):
            results[kind] = ProbeResult(bool(cached.get("ok")), str(cached.get("detail", "")))
        else:
            booting[kind] = (key, in_thread(lambda e=emulator, a=accel: boot_probe(e, a, rom, timeout)))
    models: dict[str, tuple[str, ...]] = {}
    listing = {}
    for emulator in sorted(set(emulators.values())):
        key = emulator_key("nics", emulator)
        cached = cache.get(key) if key else None
        if isinstance(cached, list):
            models[emulator] = tuple(cached)
        else:
            listing[emulator] = (key, in_thread(lambda e=emulator: qemu_nic_help(e)))
    cut_short: set[str] = set()
    for kind, (key, wait) in booting.items():
        finished, value = wait(deadline.left() + 0.1)
        if not (finished and isinstance(value, ProbeResult)):
            value = ProbeResult(False, f"{kind} boot probe did not finish in time", timed_out=True)
        results[kind] = value
        # A guest still running when a probe shortened by the deadline ended proves nothing.
        if value.timed_out and (not finished or timeout < PROBE_TIMEOUT):
            cut_short.add(kind)
        elif key:
            cache.put(key, {"ok": value.ok, "detail": value.detail})
    for emulator, (key, wait) in listing.items():
        finished, text = wait(deadline.left() + 0.1)
        if finished and isinstance(text, str):
            models[emulator] = nic_models(text)
            if key:
                cache.put(key, list(models[emulator]))
    return results, models, frozenset(cut_short)


def qemu_nic_help(emulator: str) -> str:
    """``EMULATOR -nic model=help`` (QEMU prints the models it can emulate, and exits)."""
    done = subprocess.run([emulator, "-nic", "model=help"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=PROBE_TIMEOUT, check=False)
    return done.stdout


def host_bridges(names: Iterable[str]) -> tuple[str, ...]:
    """The ``names`` that are bridge devices on this host."""
    return tuple(name for name in names
                 if "/" not in name and Path("/sys/class/net", name, "bridge").is_dir())


def start_scripts(script_dir: Path | None,
                  cwd: Path) -> tuple[list[tuple[str, subprocess.Popen]], list[ScriptAnswer]]:
    """Launch ``SCRIPT discover /dev/null`` for every admin script (there is no job ad yet);
    scripts that may not run are answered at once."""
    if script_dir is None:
        return [], []
    running, refused = [], []
    try:
        entries = sorted(script_dir.iterdir())
    except OSError as error:
        return [], [ScriptAnswer(str(script_dir), False, reason=f"cannot list: {error.strerror}")]
    for script in entries:
        name = script.name
        if name.startswith("."):
            continue
        reason = script_refusal(script)
        if reason:
            refused.append(ScriptAnswer(name, False, reason=reason))
            continue
        try:
            running.append((name, subprocess.Popen(
                [str(script), "discover", os.devnull], cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)))
        except OSError as error:
            refused.append(ScriptAnswer(name, False, reason=f"cannot run: {error.strerror}"))
    return running, refused


def script_refusal(script: Path) -> str | None:
    """Why ``script`` may not act as a hypervisor (the runner's rules), or None."""
    if not _SCRIPT_NAME.match(script.name):
        return "not a hypervisor name (lower-case letters, digits, '-' and '_')"
    try:
        info = script.stat()
    except OSError as error:
        return f"cannot stat: {error.strerror}"
    if not stat.S_ISREG(info.st_mode) or not os.access(script, os.X_OK):
        return "not an executable file"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by group or others; refusing to run it"
    return None


def collect_scripts(running: list[tuple[str, subprocess.Popen]], deadline: Deadline) -> list[ScriptAnswer]:
    """Read every script's output in parallel until the deadline; kill the whole process group of
    the ones still going (or still holding their output open)."""
    readers = [(name, process, in_thread(process.communicate)) for name, process in running]
    answers = []
    for name, process, wait in readers:
        finished, output = wait(deadline.left())
        if not finished or not isinstance(output, tuple):
            os.killpg(process.pid, signal.SIGKILL)
            wait(0.2)  # reap it; its pipes close with the group
            answers.append(ScriptAnswer(name, False, reason="discover did not finish in time", timed_out=True))
            continue
        stdout, stderr = output
        if process.returncode == 0:
            answers.append(ScriptAnswer(name, True, stdout=stdout))
            continue
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        why = f": {lines[-1]}" if lines else ""
        answers.append(ScriptAnswer(name, False, reason=f"discover exited {process.returncode}{why}"))
    return answers


def discover(settings: Settings, deadline: Deadline) -> Observations:
    """Probe everything before ``deadline``."""
    state_dir = prepare_state_dir(settings.state_dir)
    running, refused = start_scripts(settings.script_dir, state_dir)
    os.environ.update(session_environment(state_dir))
    wait_libvirt = in_thread(lambda: probe_libvirt(libvirt_uri(settings.uri, state_dir, deadline)))
    finished, value = wait_libvirt(deadline.left())
    answer: LibvirtAnswer | None = None
    error: str | None = None
    probes: dict[str, ProbeResult] = {}
    models: dict[str, tuple[str, ...]] = {}
    cut_short: frozenset[str] = frozenset()
    timed_out = not finished or isinstance(value, TimeoutError)
    if timed_out:
        error = f"libvirt at {settings.uri} did not answer within {settings.timeout:g} s"
    elif isinstance(value, LibvirtAnswer):
        answer = value
        cache = ProbeCache(state_dir / "probes.json", settings.probe_ttl)
        probes, models, cut_short = probe_qemu(answer, state_dir, cache, deadline)
        cache.save()
    else:
        error = f"libvirt at {settings.uri}: " + " ".join(str(value).split())
    scripts = refused + collect_scripts(running, deadline)
    runner = settings.runner
    runner_error = None if runner.is_file() and os.access(runner, os.X_OK) else \
        f"no runner at {runner} ({knobs.RUNNER.name}): jobs could not start here"
    return Observations(
        libvirt=answer, libvirt_error=error, libvirt_timed_out=timed_out, undecided=cut_short,
        runner_error=runner_error, boot_probes=probes, nic_models=models,
        virtiofsd=virtiofsd() is not None,
        bridges=host_bridges(settings.allowed_networks), allowed_networks=settings.allowed_networks,
        allowed_buses=settings.allowed_buses, max_vcpus=settings.max_vcpus,
        scripts=tuple(sorted(scripts, key=lambda s: s.hypervisor)),
        images=tuple(list_images(settings.image_dir)), screen_video=can_make_video())


def settings_from(uri: str | None, state_dir: Path | None, script_dir: Path | None, timeout: float,
                  config: Mapping[str, str]) -> Settings:
    """Command-line values over the HTCondor knobs in ``config`` over the defaults."""
    probe_ttl = knobs.DISCOVERY_PROBE_TTL.value(config)
    image_dir = knobs.IMAGE_DIR.value(config)
    return Settings(
        uri=uri or knobs.LIBVIRT_URI.value(config) or DEFAULT_URI,
        state_dir=state_dir or knobs.DISCOVERY_STATE_DIR.value(config) or default_state_dir(),
        script_dir=script_dir or knobs.SCRIPT_DIR.value(config),
        runner=Path(knobs.RUNNER.value(config) or jobcontract.DEFAULT_RUNNER),
        timeout=timeout,
        probe_ttl=DEFAULT_PROBE_TTL if probe_ttl is None else probe_ttl,
        allowed_networks=knobs.ALLOWED_NETWORKS.value(config),
        allowed_buses=knobs.ALLOWED_BUSES.value(config),
        max_vcpus=knobs.MAX_VCPUS.value(config),
        image_dir=str(image_dir) if image_dir else None,
        keep=knobs.DISCOVERY_KEEP.value(config),
    )


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("-uri", "--uri", help=f"libvirt URI (knob {knobs.LIBVIRT_URI.name}; default {DEFAULT_URI}).")
@click.option("-state-dir", "--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"libvirt session files and the probe cache (knob {knobs.DISCOVERY_STATE_DIR.name}; "
                   "default a private folder in the temp directory).")
@click.option("-script-dir", "--script-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"admin scripts, one per script-managed hypervisor (knob {knobs.SCRIPT_DIR.name}).")
@click.option("-timeout", "--timeout", type=click.FloatRange(min=0.1),
              help=f"seconds for the whole discovery (default {DEFAULT_TIMEOUT:g}); a longer one "
                   "once by hand warms libvirt's caches.")
@click.version_option(__version__, prog_name="condor_vm_discover")
@reports_errors
def main(uri: str | None, state_dir: Path | None, script_dir: Path | None, timeout: float | None) -> None:
    """Print this node's VM capabilities as STARTD_CRON output (see docs/admin-guide.md)."""
    budget = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = Deadline(budget)  # reading the configuration counts too
    config = knobs.read(KNOBS)
    settings = settings_from(uri, state_dir, script_dir, budget, config)
    observations = replace(discover(settings, deadline), config_source=config_source(os.environ),
                           config_digest=digest(vmsubmit_knobs()))
    now = time.time()
    record_file = settings.state_dir / VERIFIED_FILE
    kept = keepable(load_verified(record_file, settings.uri), observations, now, settings.keep)
    ad = build_ad(observations, kept, now)
    save_verified(record_file, settings.uri, verified(ad, observations, kept, now))
    click.echo(cron_text(ad), nl=False)
