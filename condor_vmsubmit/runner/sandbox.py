"""The job's sandbox as the starter hands it to the runner: where it is, the ad files, the spec in it.

The starter runs the job in its scratch directory (``$_CONDOR_SCRATCH_DIR``, else the working
directory); the layout inside is :class:`condor_vmsubmit.domain.sandbox.Sandbox`.  The job's ads
and the user's domain XML are read by :mod:`.job`; this module imports nothing heavy, so the
runner can read the spec before anything else (:mod:`.cli`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..domain.sandbox import Sandbox
from ..errors import InputError
from ..spec import SpecVersionError, VMSpec


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
