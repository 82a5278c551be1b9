"""The guardian: owns the job's session libvirtd and makes the guest follow the runner.

Started through :class:`GuardianProcess` (the runner's end of it) in a session of its own,
as a copy of the runner (a fork: libvirtd starts tens of milliseconds sooner than from a new
interpreter) or, from a process that may not fork, as
``python -m condor_vmsubmit.runner.guard [--all-drivers] STATE_DIR RUNNER_PID``; either way
it is named ``condor_vm_guard`` and works in ``STATE_DIR``, where ``condor_vm_control``
finds the session (:mod:`condor_vmsubmit.control.locate`).  It

* starts ``libvirtd`` in session mode with its XDG folders in ``STATE_DIR`` (as root,
  inside a user namespace that maps root to an ordinary uid: libvirt gives root only
  the system daemon) and becomes QEMU's parent (a child subreaper), so QEMU stays in
  the job's process tree; it seeds the session with libvirt's probe of QEMU from
  earlier jobs of the same user on this node (a second saved per job; see
  :func:`probe_cpu` for why the daemon starts on one CPU), and the daemon loads
  libvirt's QEMU driver alone (:func:`qemu_driver_only`);
* pauses every running guest while the runner is stopped (SIGSTOP, a suspend) and
  resumes it when the runner continues;
* when its control pipe reaches end of file -- the runner exited or was killed, however --
  kills libvirtd and QEMU, removes ``STATE_DIR`` and exits: nothing of the job
  outlives it.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import NoReturn

from ..errors import VMSubmitError
from ..session_daemon import libvirtd_command, make_folders, session_environment, socket_path, uri

PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
PROCESS_NAME = "condor_vm_guard"  # what ps shows (15 bytes at most)
POLL_SECONDS = 0.1
STARTUP_POLL_SECONDS = 0.005
QEMU_DRIVER = "libvirt_driver_qemu.so"
ALL_DRIVERS_FLAG = "--all-drivers"
SOCKET_WAIT_SECONDS = 30.0
# struct sockaddr_un.sun_path holds 108 bytes; libvirt puts a guest agent channel's socket deepest.
MAX_SOCKET_PATH = 107
_DEEPEST_SOCKET = "config/libvirt/qemu/channel/target/domain-999-cvm-0123456789/org.qemu.guest_agent.0"


class SessionError(VMSubmitError):
    """The per-job libvirt session could not be started."""


def system_driver_dir() -> Path | None:
    """Where this host's libvirt keeps its driver modules (distributions differ), or None."""
    candidates = [Path("/usr/lib64/libvirt/connection-driver"), Path("/usr/lib/libvirt/connection-driver")]
    if multiarch := sysconfig.get_config_var("MULTIARCH"):
        candidates.insert(0, Path("/usr/lib", multiarch, "libvirt", "connection-driver"))
    return next((folder for folder in candidates if (folder / QEMU_DRIVER).is_file()), None)


def qemu_driver_only(state_dir: Path) -> dict[str, str]:
    """What makes the job's libvirtd load libvirt's QEMU driver alone: a folder in ``state_dir``
    holding only that module, named by ``LIBVIRT_DRIVER_DIR``.

    The network, storage, node-device, nwfilter, interface and secret drivers would only do
    work nobody uses at start-up (a udev scan of the host's devices among it; about half of the
    daemon's first CPU time): the runner renders user-mode networking and file disks and refuses
    host devices.  Empty (every driver loads) where the module is not found.
    """
    system = system_driver_dir()
    if system is None:
        return {}
    folder = state_dir / "drivers"
    folder.mkdir(mode=0o700, exist_ok=True)
    link = folder / QEMU_DRIVER
    if not link.is_symlink():
        link.symlink_to(system / QEMU_DRIVER)
    return {"LIBVIRT_DRIVER_DIR": str(folder)}


def state_folder(sandbox_state: Path) -> Path:
    """Where the session keeps its files: the sandbox's own folder, unless its socket paths
    would be too long for UNIX sockets; then a short private folder in /tmp (the guardian
    removes either when the job ends)."""
    if len(str(sandbox_state / _DEEPEST_SOCKET)) <= MAX_SOCKET_PATH:
        return sandbox_state
    return Path(tempfile.mkdtemp(prefix="cvm-"))


class GuardianProcess:
    """The runner's end: the guardian started at once, waited for only when the session is needed.

    Starting it does not wait, so the job's libvirtd comes up while the runner does other work
    (imports, checks).  :meth:`stop` ends the guardian, which takes the session with it.
    """

    _controls: set[int] = set()  # our ends of the guardians still running: a fork closes them

    def __init__(self, sandbox_state: Path, *, all_drivers: bool = False):
        """``all_drivers``: a libvirtd with every driver, as an admin's own (bench/ compares with one)."""
        try:
            self.state_dir = state_folder(sandbox_state)
            self.state_dir.mkdir(mode=0o700, exist_ok=True)
            make_folders(self.state_dir)
        except OSError as exc:
            raise SessionError(f"cannot make the per-job libvirt session's folder: {exc.strerror}",
                               path=exc.filename) from None
        self.returncode: int | None = None
        control, self._control = os.pipe()  # the guardian's end reaches EOF when ours closes, however we end
        try:
            if may_fork():
                self.pid = os.fork()
                if self.pid == 0:  # the guardian: it never returns into the caller's code
                    try:
                        for other in (self._control, *GuardianProcess._controls):
                            os.close(other)  # another guardian's EOF must not wait for us
                        serve(control, self.state_dir, os.getppid(), all_drivers)
                    finally:
                        os._exit(1)
            else:
                flags = [ALL_DRIVERS_FLAG] if all_drivers else []
                self.pid = os.posix_spawn(sys.executable, [sys.executable, "-m", __name__, *flags, str(self.state_dir),
                                                           str(os.getpid())], os.environ,
                                          file_actions=[(os.POSIX_SPAWN_DUP2, control, 0)])
        except OSError as exc:
            os.close(self._control)
            raise SessionError(f"cannot start the guardian of the per-job libvirt session: {exc.strerror}") from None
        finally:
            os.close(control)
        GuardianProcess._controls.add(self._control)

    @property
    def uri(self) -> str:
        return uri(self.state_dir)

    def running(self) -> bool:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:  # gone before it was asked to go
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode is None

    def wait_until_listening(self) -> None:
        """Return once the job's libvirtd has made its socket; SessionError if it never does."""
        socket = socket_path(self.state_dir)
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while not socket.exists():
            if not self.running() or time.monotonic() > deadline:
                log = self.state_dir / "libvirtd.log"
                tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                raise SessionError(f"the per-job libvirtd did not start: {tail.strip()}")
            time.sleep(STARTUP_POLL_SECONDS)

    def stop(self) -> None:
        """Let the guardian kill libvirtd and QEMU and remove the state folder."""
        if self._control is not None:
            GuardianProcess._controls.discard(self._control)
            os.close(self._control)
            self._control = None
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


def may_fork() -> bool:
    """Whether this process may start the guardian as a copy of itself: only while it runs one
    thread and has not loaded libvirt, whose locks and connections a copy must not inherit
    (the runner, when it starts the guardian first thing)."""
    return threading.active_count() == 1 and "libvirtmod" not in sys.modules


def read_stat(proc: Path) -> tuple[str, list[str]] | None:
    """A process's name and the fields of ``proc/stat`` after it (state, parent pid, ...), or
    None when the process is gone.  Read as bytes: a process's name need not be UTF-8."""
    try:
        data = (proc / "stat").read_bytes()
    except OSError:
        return None
    name, fields = data.split(b" (", 1)[1].rsplit(b") ", 1)
    return name.decode(errors="replace"), fields.decode("ascii", "replace").split()


def process_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (state T); False when it is gone."""
    stat = read_stat(Path(f"/proc/{pid}"))
    return stat is not None and stat[1][0] in ("T", "t")


def reap_forever() -> None:
    """Reap our children (QEMU among them) as they end, in a thread of its own.

    libvirtd waits for a killed QEMU to disappear, and a zombie does not; so reaping
    must not wait for the main loop, which may itself be waiting on libvirtd.
    """
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(POLL_SECONDS)


def children() -> list[int]:
    """Our direct children (orphans of the session that we adopted as subreaper)."""
    me = str(os.getpid())
    return [int(proc.name) for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and (stat := read_stat(proc)) is not None and stat[1][1] == me]


CAPABILITIES = Path("cache", "libvirt", "qemu", "cache", "capabilities")
CAPABILITIES_END = b"</qemuCaps>"


def node_cache() -> Path | None:
    """This user's folder for what jobs on this node may share: libvirt's probe of QEMU's
    capabilities (libvirt itself discards an entry when QEMU or libvirt changes).  None when
    the folder is not ours alone."""
    folder = Path(tempfile.gettempdir(), f"condor_vm_runner-{os.geteuid()}")
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return None
    return folder


def probe_cpu() -> int:
    """The CPU the job's libvirtd starts on: the first this process may use.

    libvirt keeps its probe of QEMU only while the CPUID it reads at start-up is the one it
    probed with, and CPUID differs between a host's CPUs (each reports its own APIC ID).  A
    daemon starting wherever the scheduler puts it threw the node's probe away on about half
    the starts of a 2-CPU host and probed QEMU again (about a second, more under load), in the
    middle of the job's start or restore.  So the daemon starts on this CPU, the probe it
    keeps is filed under it (:func:`capabilities_cache`), and the daemon gets the job's CPUs
    back once it is up (:func:`release_cpus`).
    """
    return min(os.sched_getaffinity(0))


def capabilities_cache(node: Path, cpu: int) -> Path:
    """Where the node keeps libvirt's probe made by a daemon started on ``cpu``."""
    return node / f"capabilities-cpu{cpu}"


def release_cpus(pid: int, cpus: set[int]) -> None:
    """Let every thread of process ``pid`` run on ``cpus`` again (passes until none is left
    out: a thread started meanwhile inherits the mask of the one that started it)."""
    for _ in range(10):
        pinned = 0
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                if os.sched_getaffinity(int(task.name)) != cpus:
                    os.sched_setaffinity(int(task.name), cpus)
                    pinned += 1
            except OSError:
                continue  # a thread that ended meanwhile
        if not pinned:
            return


def copy_capabilities(source: Path, target: Path) -> None:
    """Copy the capability files of ``source`` that ``target`` lacks or holds in another version,
    with their times (each through a temporary name).  libvirt rewrites a file whenever it
    probes QEMU again, so a file whose time is the node's was not probed again."""
    if not source.is_dir():
        return
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in source.glob("*.xml"):
        existing = target / entry.name
        if entry.is_symlink() or (existing.is_file() and existing.stat().st_mtime_ns == entry.stat().st_mtime_ns):
            continue
        if not entry.read_bytes().rstrip().endswith(CAPABILITIES_END):
            continue  # cut short (libvirtd killed while writing it): libvirt would only probe again
        partial = target / f".{entry.name}.{os.getpid()}"
        shutil.copy2(entry, partial)
        partial.rename(existing)


def write_qemu_conf(state_dir: Path) -> None:
    """QEMU's output goes straight to a file: no virtlogd to start, or to outlive the job."""
    conf = state_dir / "config" / "libvirt" / "qemu.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text('stdio_handler = "file"\n')


class Guardian:
    def __init__(self, state_dir: Path, runner_pid: int, *, all_drivers: bool = False):
        self.state_dir = state_dir
        self.runner_pid = runner_pid
        self.connection = None
        self.paused: set[str] = set()
        write_qemu_conf(state_dir)
        self.cpus = os.sched_getaffinity(0)
        cpu = probe_cpu()
        node = node_cache()
        self.node_cache = capabilities_cache(node, cpu) if node is not None else None
        if self.node_cache is not None:
            try:
                copy_capabilities(self.node_cache, state_dir / CAPABILITIES)
            except OSError:
                pass  # libvirt probes QEMU itself
        log = open(state_dir / "libvirtd.log", "ab")
        environment = session_environment(state_dir) | ({} if all_drivers else qemu_driver_only(state_dir))
        os.sched_setaffinity(0, {cpu})  # this thread's, which the daemon inherits
        try:
            self.daemon = subprocess.Popen(libvirtd_command(), env=environment,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            os.sched_setaffinity(0, self.cpus)
            log.close()
        import libvirt  # now, while libvirtd starts: connect() finds it loaded

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

    def connect(self):
        """Our own connection to the session, once its socket is there.

        The first one also has the daemon load libvirt's capabilities of this host's QEMU (from
        the node's cache), while the runner is still busy with its own start: its start or
        restore then finds them ready.  Only those: the host's capabilities would load every
        QEMU installed (qemu-system-i386 as well) and model the host CPU, which a job's start
        does not need and which only competed with it for the CPU (restores 50 ms slower).
        """
        if self.connection is None and socket_path(self.state_dir).exists():
            import libvirt

            try:
                self.connection = libvirt.open(uri(self.state_dir))
            except libvirt.libvirtError:
                return None
            release_cpus(self.daemon.pid, self.cpus)  # it has read CPUID: see probe_cpu()
            try:
                self.connection.getDomainCapabilities(None, os.uname().machine, None, None)
            except libvirt.libvirtError:
                pass  # an arch libvirt has no QEMU for: the job's own start says what is wrong
        return self.connection

    def follow(self) -> None:
        """Pause the running guests while the runner is stopped, resume them after."""
        stopped = process_stopped(self.runner_pid)
        if not stopped and not self.paused:
            return
        connection = self.connect()
        if connection is None:
            return
        import libvirt

        try:
            if stopped:
                for domain in connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING):
                    domain.suspend()
                    self.paused.add(domain.UUIDString())
            else:
                for domain in connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED):
                    if domain.UUIDString() in self.paused:
                        domain.resume()
                self.paused.clear()
        except libvirt.libvirtError:
            pass

    def clean_up(self) -> None:
        """Kill libvirtd and every QEMU of the job, then remove the state folder.

        A kill is all they need: everything of the session is in the state folder, while
        libvirt's own destroy or shutdown of a domain waits a fifth of a second for QEMU to go
        (and a checkpoint's domain may still be in libvirt's hands, see libvirt_backend.save_guest).
        QEMU is our child (we are its subreaper), so it goes the way of our other children.
        """
        self.daemon.kill()
        deadline = time.monotonic() + 10
        while (left := children()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # reaped meanwhile
            time.sleep(0.002)  # gone once the reaper thread has reaped them: nothing writes here any more
        if self.node_cache is not None:
            try:
                copy_capabilities(self.state_dir / CAPABILITIES, self.node_cache)
            except OSError:
                pass  # a full /tmp: the next job probes QEMU itself
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def run(self, control: int) -> None:
        """Follow the runner until the ``control`` pipe closes, then clean up."""
        poll = STARTUP_POLL_SECONDS  # until connected (or libvirtd gone): see connect()
        while True:
            readable, _, _ = select.select([control], [], [], poll)
            if readable and not os.read(control, 4096):
                break
            if self.connect() is not None or self.daemon.poll() is not None:
                poll = POLL_SECONDS
            self.follow()
        self.clean_up()


def serve(control: int, state_dir: Path, runner_pid: int, all_drivers: bool) -> NoReturn:
    """Be the guardian of the session in ``state_dir``, in a session of our own, until the
    ``control`` pipe closes; then exit."""
    code = 1
    state_dir = state_dir.absolute()
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_NAME, PROCESS_NAME.encode(), 0, 0, 0)
        os.chdir(state_dir)
        # The runner decides when we stop (its end), never a Ctrl-C or a vacate's SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threading.Thread(target=reap_forever, name="reaper", daemon=True).start()
        Guardian(state_dir, runner_pid, all_drivers=all_drivers).run(control)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        # Everything is cleaned up: leave at once (the runner waits for us), without the
        # interpreter's teardown of libvirt and the reaper thread -- or, in a fork, the runner's.
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    *flags, state_dir, runner_pid = sys.argv[1:]
    serve(0, Path(state_dir), int(runner_pid), ALL_DRIVERS_FLAG in flags)


if __name__ == "__main__":
    main()
