"""A session ``libvirtd`` of our own, keeping everything in one state folder.

The runner's guardian starts one per job (:mod:`condor_vmsubmit.runner.guard`); discovery, as
root, starts one for its questions and reuses it from run to run
(:mod:`condor_vmsubmit.discover.probes`).  Both lay the folder out alike: the daemon's
``XDG_*`` folders below it and its socket in ``run/libvirt/``.  libvirt gives root only the
system daemon, so as root the daemon runs inside a user namespace that maps root to an
ordinary uid, where it is a session daemon.
"""

from __future__ import annotations

import os
from pathlib import Path

LIBVIRTD = "/usr/sbin/libvirtd"
# As root, libvirtd runs in a user namespace as this uid so that it is a session daemon.
NAMESPACE_UID = 1000
# The daemon's XDG runtime, config and cache folders inside the state folder.
FOLDERS = ("run", "config", "cache")


def make_folders(state_dir: Path) -> None:
    """The daemon's folders in ``state_dir`` (which must exist), private to this user."""
    for folder in FOLDERS:
        (state_dir / folder).mkdir(mode=0o700, exist_ok=True)


def xdg_environment(state_dir: Path) -> dict[str, str]:
    """The ``XDG_*`` variables that put a session daemon's and its clients' files in ``state_dir``."""
    runtime, config, cache = (str(state_dir / folder) for folder in FOLDERS)
    return {"XDG_RUNTIME_DIR": runtime, "XDG_CONFIG_HOME": config, "XDG_CACHE_HOME": cache}


def session_environment(state_dir: Path) -> dict[str, str]:
    """The whole environment of a session libvirtd keeping everything in ``state_dir``."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(state_dir), **xdg_environment(state_dir),
            "LANG": "C"}


def libvirtd_command() -> list[str]:
    """``libvirtd``, wrapped in a user namespace when we are root."""
    if os.geteuid() != 0:
        return [LIBVIRTD]
    return ["unshare", "--user", f"--map-user={NAMESPACE_UID}", f"--map-group={NAMESPACE_UID}", LIBVIRTD]


def socket_path(state_dir: Path) -> Path:
    """Where the daemon of ``state_dir`` listens."""
    return state_dir / FOLDERS[0] / "libvirt" / "libvirt-sock"


def uri(state_dir: Path) -> str:
    """The URI that reaches the daemon of ``state_dir``."""
    return f"qemu:///session?socket={socket_path(state_dir)}"
