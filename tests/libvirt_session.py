"""Test helpers: a private ``qemu:///session`` libvirtd and runs of the real ``condor_vm_discover``.

On an execute node the startd runs discovery as the condor user, whose ``qemu:///session``
daemon libvirt starts by itself.  Tests often run as root, for whom libvirt maps
``qemu:///session`` to the system daemon; so the helper starts the same session daemon
for an unprivileged user (``nobody``, in group ``kvm`` when that exists, as an admin would
set up the condor user) and discovery reaches it through the socket in the URI.
"""

from __future__ import annotations

import functools
import grp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU = "/usr/bin/qemu-system-x86_64"
SYSTEM_FIRMWARE = Path("/usr/share/qemu/firmware")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@contextmanager
def session_libvirtd(*, mask_firmware: bool = False) -> Iterator[str]:
    """A running session libvirtd with its XDG folders in a fresh temp folder; yields its URI.

    ``mask_firmware`` hides the system's UEFI firmware descriptors from it (an empty file of
    the same name in ``$XDG_CONFIG_HOME/qemu/firmware`` masks one), as on a node without OVMF.
    """
    if not Path(LIBVIRTD).exists():
        import pytest

        pytest.skip(f"{LIBVIRTD} is not installed (Debian package libvirt-daemon)")
    root = Path(tempfile.mkdtemp(prefix="vmdisc-", dir="/tmp"))  # short: UNIX socket paths are limited
    runtime, config, cache = root / "runtime", root / "config", root / "cache"
    for folder in (runtime, config / "qemu" / "firmware", cache):
        folder.mkdir(mode=0o700, parents=True)
    if mask_firmware:
        for descriptor in SYSTEM_FIRMWARE.glob("*.json"):
            (config / "qemu" / "firmware" / descriptor.name).write_text("")
    as_root = os.geteuid() == 0
    if as_root:
        for path in [root, *root.rglob("*")]:
            shutil.chown(path, "nobody", "nogroup")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root), "XDG_RUNTIME_DIR": str(runtime),
           "XDG_CONFIG_HOME": str(config), "XDG_CACHE_HOME": str(cache)}
    log = (root.parent / f"{root.name}.log").open("wb")
    daemon = subprocess.Popen(
        [LIBVIRTD, "--timeout", "900"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,
        **({"user": "nobody", "group": "nogroup",
            "extra_groups": ["kvm"] if _group_exists("kvm") else []} if as_root else {}))
    socket = runtime / "libvirt" / "libvirt-sock"
    try:
        for _ in range(300):  # libvirtd makes its socket within a second; allow a slow machine
            if socket.exists() or daemon.poll() is not None:
                break
            time.sleep(0.1)
        if not socket.exists():
            raise RuntimeError(f"libvirtd did not start: {Path(log.name).read_text()[-2000:]}")
        yield f"qemu+unix:///session?socket={socket}"
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def installed_runner() -> str:
    """The ``condor_vm_runner`` installed with this Python (discovery claims nothing without one)."""
    beside = Path(sys.executable).parent / "condor_vm_runner"
    return str(beside) if beside.exists() else shutil.which("condor_vm_runner") or str(beside)


def run_discover(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``condor_vm_discover ARGS`` (the console script's function) in a fresh Python, with
    ``VMSUBMIT_RUNNER`` naming the installed runner unless ``env`` says otherwise.

    ``timeout`` only keeps a broken test from hanging the suite.
    """
    program = "from condor_vmsubmit.cli.discover import main; main(prog_name='condor_vm_discover')"
    command = [sys.executable, "-c", program, *args]
    knobs = {"_CONDOR_VMSUBMIT_RUNNER": installed_runner(), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **knobs}, check=False)


def parse_cron(text: str) -> dict[str, str]:
    """``Attr = value`` lines up to the ``-`` line, as the startd reads them."""
    lines = text.splitlines()
    assert lines and lines[-1] == "-", f"the ad does not end with a '-' line: {text!r}"
    ad = {}
    for line in lines[:-1]:
        name, equals, value = line.partition(" = ")
        assert equals, f"not an 'Attr = value' line: {line!r}"
        ad[name] = value
    return ad


def string_list(value: str) -> list[str]:
    """The items of a ClassAd string-list literal such as ``"qemu,kvm"``."""
    assert value.startswith('"') and value.endswith('"'), value
    return [item for item in value[1:-1].split(",") if item]


@functools.cache
def kernel_banner_under(accel: str, seconds: float) -> bool:
    """Oracle independent of discovery: does the Debian kernel print 'Linux version' on its
    serial console under ``-accel accel`` within ``seconds``?  (Once per test session.)"""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        import pytest

        pytest.skip("no /boot/vmlinuz-* (Debian package linux-image-cloud-amd64)")
    command = [QEMU, "-accel", accel, "-machine", "pc", "-m", "256", "-nodefaults", "-no-user-config",
               "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernels[-1]),
               "-append", "console=ttyS0 panic=-1"]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=seconds)
        output = done.stdout
    except subprocess.TimeoutExpired as hung:
        output = hung.stdout or b""
    return b"Linux version" in output
