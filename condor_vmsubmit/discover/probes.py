"""Discovery's probes: libvirt's answers, boot probes and NIC lists of QEMU, host bridges.

Each asks the host and returns raw answers for :mod:`.ad`.  As root, ``qemu:///session`` means a
session libvirtd of discovery's own (:mod:`condor_vmsubmit.session_daemon`, as the runner's
guardian starts one per job), kept running between runs.  Boot-probe and ``-nic model=help``
answers are cached in the state directory (:class:`ProbeCache`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from .. import session_daemon
from ..kvmprobe import PROBE_TIMEOUT, ProbeResult, boot_probe, probe_rom
from .ad import PROBED_ACCELERATORS, LibvirtAnswer, guest_types, host_arch, nic_models
from .deadline import Deadline, in_thread

DEFAULT_URI = "qemu:///session"
PROBE_ARCHES = ("x86_64", "i686")
PRIVATE_DAEMON_IDLE = 600    # seconds discovery's own daemon waits for the next run before it exits


def libvirt_uri(uri: str, state_dir: Path, deadline: Deadline) -> str:
    """The URI to ask.  For ``qemu:///session`` libvirt starts the user's daemon by itself, but
    not for root: there, start (or reuse) a session libvirtd of our own and name its socket."""
    if uri != DEFAULT_URI or os.geteuid() != 0:
        return uri
    socket_file = session_daemon.socket_path(state_dir)
    log_file = state_dir / "libvirtd.log"
    if not listening(socket_file):
        with log_file.open("ab") as log:
            daemon = subprocess.Popen(
                [*session_daemon.libvirtd_command(), "--timeout", str(PRIVATE_DAEMON_IDLE)],
                env=session_daemon.session_environment(state_dir),
                cwd=state_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        while not listening(socket_file):
            if daemon.poll() is not None:
                lines = log_file.read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"libvirtd exited ({lines[-1] if lines else daemon.returncode}); "
                                   f"see {log_file}")
            if deadline.left() <= 0:
                raise TimeoutError("the session libvirtd is still starting")
            time.sleep(0.02)
    return session_daemon.uri(state_dir)


def listening(socket_file: Path) -> bool:
    """Whether a server accepts connections on the UNIX socket ``socket_file``."""
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(socket_file))
        except OSError:
            return False
    return True


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
