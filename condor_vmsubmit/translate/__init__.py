"""VMSpec -> HTCondor submit description, for two targets.

* ``runner`` (default, :mod:`.runner_target`): a vanilla-universe job whose executable is the
  execute-side runner (``condor_vm_runner``); the spec file, the user's domain XML and the disks
  travel in ``transfer_input_files``; custom ``VM_*`` job attributes describe the VM and
  Requirements (:mod:`.matchmaking`) match what execute nodes advertise (``VM_TYPES``,
  ``VM_HYPERVISORS``, ``VM_<HV>_ATTR_*``; see docs/attributes.md).
* ``vm-universe`` (:mod:`.vm_universe`): a stock ``universe = vm`` job that today's condor_submit
  accepts.  What that target cannot express becomes a warning note, or a
  :class:`~condor_vmsubmit.errors.TargetError` under ``strict``.

What both share (the description, its options, file transfer, notes, ``--append``) is in
:mod:`.description`.  Everything here is pure: no file is read or written, nothing is contacted.
The caller (``cli/submit_options.py``) writes the :attr:`SubmitDescription.job_files` and submits.
"""

from __future__ import annotations

from ..errors import TargetError
from ..spec import VMSpec
from .description import (
    TARGETS,
    DescriptionBuilder,
    JobFile,
    Note,
    SubmitDescription,
    Target,
    TranslateOptions,
    parse_append,
    safe_file_stem,
)
from .runner_target import RunnerJob
from .vm_universe import VMUniverseJob

__all__ = ["TARGETS", "JobFile", "Note", "SubmitDescription", "Target", "TranslateOptions", "parse_append",
           "safe_file_stem", "translate"]

DEFAULT_OPTIONS = TranslateOptions()
TARGET_JOBS: dict[Target, type[DescriptionBuilder]] = {"runner": RunnerJob, "vm-universe": VMUniverseJob}


def translate(spec: VMSpec, options: TranslateOptions = DEFAULT_OPTIONS) -> SubmitDescription:
    """Translate ``spec`` for ``options.target``; raises TargetError under ``strict``."""
    if options.target not in TARGETS:
        raise TargetError(f"unknown target '{options.target}' (choose {' or '.join(TARGETS)})")
    return TARGET_JOBS[options.target](spec, options).describe()
