"""The job as the starter hands it to the runner: its sandbox, job ad, machine ad and spec.

The starter names the ad files in ``$_CONDOR_JOB_AD`` and ``$_CONDOR_MACHINE_AD`` and
runs the job in its scratch directory (``$_CONDOR_SCRATCH_DIR``, else the working
directory).  HTCondor flattens ``transfer_input_files``, so every file the spec names
is found in the sandbox under its base name (:meth:`Sandbox.file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

import classad2
from lxml import etree

from .. import jobcontract
from ..errors import InputError
from ..spec import VMSpec
from ..xmlsafe import parse_file

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


@dataclass(frozen=True)
class Job:
    """Everything the runner knows about the job before it starts anything."""

    sandbox: Sandbox
    spec: VMSpec
    job_ad: classad2.ClassAd
    machine_ad: classad2.ClassAd
    user_domain: etree._Element | None

    @property
    def job_id(self) -> str:
        """The job's global id (stable across restarts), or cluster.proc, or the sandbox path."""
        for key in ("GlobalJobId",):
            if key in self.job_ad:
                return str(self.job_ad[key])
        if "ClusterId" in self.job_ad:
            return f"{self.job_ad['ClusterId']}.{self.job_ad.get('ProcId', 0)}"
        return str(self.sandbox.root)


def read_ad(path: str | Path) -> classad2.ClassAd:
    """A ClassAd file as the starter writes it (``Name = value`` lines)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read the ad: {exc.strerror}", path=path) from None
    try:
        return classad2.parseOne(text)
    except Exception as exc:  # classad2 raises plain ValueError/ClassAdException subclasses
        raise InputError(f"not a ClassAd: {exc}", path=path) from None


def sandbox_root(environ: Mapping[str, str], cwd: Path) -> Path:
    """The job's scratch directory.

    >>> sandbox_root({"_CONDOR_SCRATCH_DIR": "/x"}, Path("/y"))
    PosixPath('/x')
    >>> sandbox_root({}, Path("/y"))
    PosixPath('/y')
    """
    return Path(environ.get("_CONDOR_SCRATCH_DIR") or cwd)


def load_job(environ: Mapping[str, str], cwd: Path) -> Job:
    """Read the ads and the spec the starter and the submit side left for the runner."""
    sandbox = Sandbox(sandbox_root(environ, cwd).resolve())
    ads = []
    for variable in ("_CONDOR_JOB_AD", "_CONDOR_MACHINE_AD"):
        if not environ.get(variable):
            raise InputError(f"${variable} is not set: the runner runs as an HTCondor job's executable "
                             "(or through --local)")
        ads.append(read_ad(environ[variable]))
    try:
        spec = VMSpec.from_json(sandbox.spec_file.read_text())
    except OSError as exc:
        raise InputError(f"cannot read the VM spec: {exc.strerror}", path=sandbox.spec_file) from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a VM spec: {exc}", path=sandbox.spec_file) from None
    user_domain = None
    if spec.source_format == "libvirt" and sandbox.domain_xml_file.exists():
        user_domain = parse_file(sandbox.domain_xml_file)
    return Job(sandbox, spec, ads[0], ads[1], user_domain)
