"""Discovery's pure part: from what the probes saw to the machine ad and its cron text.

Nothing here reads a file, runs a program or asks libvirt: :class:`Observations` holds the raw
answers (:mod:`.probes`, :mod:`.scripts`), :func:`build_ad` turns them into ``VM_*`` attribute
name -> ClassAd literal (the names: :mod:`condor_vmsubmit.attributes`), :func:`cron_text` prints
that for the startd, and :func:`keepable` / :func:`verified` decide what a run too slow to check
a hypervisor keeps of an earlier run's verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from .. import __version__
from ..attributes import (
    ARCHES,
    BRIDGES,
    DISK_BUSES,
    EFI,
    HYPERVISOR_FACTS,
    MACHINE_TYPES,
    MAX_VCPUS,
    NETWORKS,
    NIC_MODELS,
    VIRTIOFS,
    VM_CONDOR_CONFIG,
    VM_CONFIG_DIGEST,
    VM_DISCOVERY_AGE,
    VM_DISCOVERY_ERROR,
    VM_DISCOVERY_NOTES,
    VM_HYPERVISORS,
    VM_IMAGES,
    VM_RUNNER_VERSION,
    VM_SCREEN_VIDEO,
    VM_TYPES,
)
from ..classads import LIBVIRT_MANAGED, SCRIPT_MANAGED, hypervisor_prefix
from ..kvmprobe import ProbeResult

FactValue = int | bool | tuple[str, ...]
# The QEMU-based domain types: each must boot the probe firmware under its accelerator.
PROBED_ACCELERATORS = {"qemu": "tcg", "kvm": "kvm"}


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
        facts[MAX_VCPUS.name] = int(vcpu_max.get("max", "0"))
    firmware = _enum(root, "os/enum[@name='firmware']")
    loaders = tuple(v.text for v in root.iterfind("os/loader/value") if v.text)
    # libvirt lists 'efi' when a firmware descriptor names an installed image; older versions
    # only list loader images.
    facts[EFI.name] = "efi" in firmware or (not root.findall("os/enum[@name='firmware']") and bool(loaders))
    facts[DISK_BUSES.name] = _enum(root, "devices/disk/enum[@name='bus']")
    facts[VIRTIOFS.name] = "virtiofs" in _enum(root, "devices/filesystem/enum[@name='driverType']")
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
    prefix = hypervisor_prefix(hypervisor)
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
    most, buses = facts.get(MAX_VCPUS.name), facts.get(DISK_BUSES.name)
    if observations.max_vcpus is not None and isinstance(most, int):
        facts[MAX_VCPUS.name] = min(most, observations.max_vcpus)
    if observations.allowed_buses and isinstance(buses, tuple):
        facts[DISK_BUSES.name] = tuple(bus for bus in buses if bus in observations.allowed_buses)
    facts[VIRTIOFS.name] = bool(facts.get(VIRTIOFS.name)) and observations.virtiofsd
    facts[MACHINE_TYPES.name] = tuple(sorted(guest.machines))
    arches = {other.arch for other in guest_types(answer.capabilities) if other.domain_type == kind}
    facts[ARCHES.name] = tuple(sorted(arches))
    if kind in PROBED_ACCELERATORS and guest.emulator in observations.nic_models:
        facts[NIC_MODELS.name] = observations.nic_models[guest.emulator]
    facts[NETWORKS.name] = tuple(n for n in observations.allowed_networks if n in answer.networks)
    facts[BRIDGES.name] = tuple(b for b in observations.allowed_networks if b in observations.bridges)
    return {fact.of(kind): classad_literal(facts[fact.name]) for fact in HYPERVISOR_FACTS if fact.name in facts}


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
        VM_TYPES.name: classad_literal(tuple(types)),
        VM_HYPERVISORS.name: classad_literal(tuple(hypervisors)),
        VM_RUNNER_VERSION.name: classad_literal(observations.version),
        VM_DISCOVERY_ERROR.name: classad_literal("; ".join(errors) if errors else None),
        VM_DISCOVERY_NOTES.name: classad_literal("; ".join(notes) if notes else None),
        VM_IMAGES.name: classad_literal(observations.images),
        VM_CONDOR_CONFIG.name: classad_literal(observations.config_source),
        VM_CONFIG_DIGEST.name: classad_literal(observations.config_digest),
        VM_DISCOVERY_AGE.name: classad_literal(max((int(now - e.at) for e in kept.values()), default=0)),
        VM_SCREEN_VIDEO.name: classad_literal(observations.screen_video),
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
        prefix = hypervisor_prefix(name)
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
