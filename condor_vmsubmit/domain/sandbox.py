"""The layout of a job's sandbox: where each file of the job lies once HTCondor has transferred it.

HTCondor flattens ``transfer_input_files``, so every file the spec names is found in the sandbox
under its base name (:meth:`Sandbox.file`).  The runner works in the real sandbox; the submit side
pictures one to render the domain the runner would start (:mod:`condor_vmsubmit.checks.preflight`).
This module imports nothing heavy, so the runner can find its files before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import jobcontract

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
