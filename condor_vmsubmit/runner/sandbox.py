"""The job's sandbox as the starter hands it to the runner: its paths and the VM spec in it.

The starter runs the job in its scratch directory (``$_CONDOR_SCRATCH_DIR``, else the
working directory).  HTCondor flattens ``transfer_input_files``, so every file the spec
names is found in the sandbox under its base name (:meth:`Sandbox.file`).  The job's ads
and the user's domain XML are read by :mod:`.job`; this module imports nothing heavy, so
the runner can read the spec before anything else (:mod:`.cli`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import jobcontract
from ..errors import InputError
from ..spec import SpecVersionError, VMSpec

# The runner's own files inside the sandbox: libvirt's per-job XDG folders, logs.
STATE_DIR = ".vm"
SAVE_FILE = "guest.save"


@dataclass(frozen=True)
class Sandbox:
    """Paths inside the job's scratch directory."""

    root: Path

    def file(self, name: str) -> Path:
        """Where a file the spec names (by any path) lies in the sandbox.

        >>> Sandbox(Path("/scratch")).file("/home/u/vm/disk.qcow2")
        PosixPath('/scratch/disk.qcow2')
        """
        return self.root / PurePosixPath(name).name

    @property
    def spec_file(self) -> Path:
        return self.root / jobcontract.SPEC_FILE

    @property
    def domain_xml_file(self) -> Path:
        return self.root / jobcontract.DOMAIN_XML_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / jobcontract.CHECKPOINT_DIR

    @property
    def save_file(self) -> Path:
        return self.checkpoint_dir / SAVE_FILE

    @property
    def console_log(self) -> Path:
        return self.root / jobcontract.CONSOLE_LOG_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR


def sandbox_root(environ: Mapping[str, str], cwd: Path) -> Path:
    """The job's scratch directory.

    >>> sandbox_root({"_CONDOR_SCRATCH_DIR": "/x"}, Path("/y"))
    PosixPath('/x')
    >>> sandbox_root({}, Path("/y"))
    PosixPath('/y')
    """
    return Path(environ.get("_CONDOR_SCRATCH_DIR") or cwd)


def ad_files(environ: Mapping[str, str]) -> tuple[Path, Path]:
    """The files the starter wrote the job ad and the machine ad into."""
    for variable in ("_CONDOR_JOB_AD", "_CONDOR_MACHINE_AD"):
        if not environ.get(variable):
            raise InputError(f"${variable} is not set: the runner runs as an HTCondor job's executable "
                             "(or through --local)")
    return Path(environ["_CONDOR_JOB_AD"]), Path(environ["_CONDOR_MACHINE_AD"])


def read_spec(sandbox: Sandbox) -> VMSpec:
    """The VM spec the submit side left in the sandbox."""
    try:
        return VMSpec.from_json(sandbox.spec_file.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the VM spec: {exc.strerror}", path=sandbox.spec_file) from None
    except SpecVersionError as exc:
        raise InputError(str(exc), path=sandbox.spec_file) from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a VM spec: {exc}", path=sandbox.spec_file) from None
