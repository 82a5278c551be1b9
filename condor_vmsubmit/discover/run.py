"""One discovery run: the settings, the state directory, every probe under one deadline, and
what earlier runs verified (``verified.json``); :func:`advertise` gives the machine ad.

Timing: every probe runs under one deadline (``--timeout``, 1.3 s by default) so the program
ends in under 2 s even when libvirtd hangs.  A hypervisor whose check did not end in time (a
cold session daemon, a loaded host) stays advertised as the last run that verified it saw it,
for ``VMSUBMIT_DISCOVERY_KEEP`` seconds (``VM_DISCOVERY_AGE`` says how old that is).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .. import jobcontract
from ..checks import knobs
from ..config import config_source, digest, vmsubmit_knobs
from ..errors import InputError
from ..kvmprobe import ProbeResult
from ..runner.screen import can_make_video
from ..runner.shares import virtiofsd
from ..session_daemon import make_folders, xdg_environment
from ..staged import list_images
from .ad import LibvirtAnswer, Observations, Verified, build_ad, keepable, verified
from .deadline import Deadline, in_thread
from .probes import DEFAULT_URI, ProbeCache, host_bridges, libvirt_uri, probe_libvirt, probe_qemu
from .scripts import collect_scripts, start_scripts

DEFAULT_TIMEOUT = 1.3        # seconds for the whole discovery; Python's start-up comes on top
DEFAULT_PROBE_TTL = 3600     # seconds a cached boot-probe or NIC list stays valid
# The knobs discovery reads (their names, types and case: checks/knobs.py).
KNOBS = (knobs.LIBVIRT_URI, knobs.DISCOVERY_STATE_DIR, knobs.SCRIPT_DIR, knobs.DISCOVERY_PROBE_TTL,
         knobs.ALLOWED_NETWORKS, knobs.ALLOWED_BUSES, knobs.MAX_VCPUS, knobs.RUNNER, knobs.IMAGE_DIR,
         knobs.DISCOVERY_KEEP)
# libvirt probes QEMU through STATE/config/libvirt/qemu/lib/qmp-XXXXXX/qmp.monitor (47 characters
# after STATE), and a UNIX socket path holds at most 107.
MAX_STATE_DIR_CHARS = 60
VERIFIED_FILE = "verified.json"


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
    make_folders(path)
    return path


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


def discover(settings: Settings, deadline: Deadline) -> Observations:
    """Probe everything before ``deadline``."""
    state_dir = prepare_state_dir(settings.state_dir)
    running, refused = start_scripts(settings.script_dir, state_dir)
    os.environ.update(xdg_environment(state_dir))
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


def advertise(settings: Settings, deadline: Deadline) -> dict[str, str]:
    """Probe everything before ``deadline``, keep what earlier runs verified and this one could not
    check in time, and record what the next run may keep: the machine ad (:func:`.ad.build_ad`)."""
    observations = replace(discover(settings, deadline), config_source=config_source(os.environ),
                           config_digest=digest(vmsubmit_knobs()))
    now = time.time()
    record_file = settings.state_dir / VERIFIED_FILE
    kept = keepable(load_verified(record_file, settings.uri), observations, now, settings.keep)
    ad = build_ad(observations, kept, now)
    save_verified(record_file, settings.uri, verified(ad, observations, kept, now))
    return ad
