"""Errors the tools report as one clear line, each kind with its own exit code.

Exit codes (documented in docs/exit-codes.md):

* 1 -- submission failed (schedd unreachable, permission denied, job rejected)
* 2 -- command-line usage error (click's own code)
* 3 -- the input file is unreadable or malformed
* 4 -- the input is refused as unsafe (entity expansion, escaping paths, backing files ...)
* 5 -- the admin policy rejected the VM
* 6 -- the chosen target cannot express the VM and ``--strict`` was given
* 7 -- ``condor_vm_control``: no VM runs in the sandbox
* 8 -- ``condor_vm_control``: the running VM did not do what was asked
* 9 -- the execute side's safety rules would refuse the VM (found at submit time)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class VMSubmitError(Exception):
    """Base class: a message meant for the user and the process exit code."""

    exit_code = 1
    details: tuple[str, ...] = ()  # lines printed before the error's own line, one per item

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``FILE:LINE: message`` (parts omitted when unknown), never more than one line."""
        where = self.path or ""
        if where and self.line:
            where = f"{where}:{self.line}"
        text = " ".join(self.message.split())
        return f"{where}: {text}" if where else text


class SubmitError(VMSubmitError):
    """Talking to the schedd failed or the job was rejected."""

    exit_code = 1


class InputError(VMSubmitError):
    """The input file cannot be read or is not a valid description."""

    exit_code = 3


class ConfigError(InputError):
    """A ``VMSUBMIT_*`` knob in the HTCondor configuration has a value its type does not allow."""


class UnsafeInputError(VMSubmitError):
    """The input is refused because using it would be unsafe."""

    exit_code = 4


class PolicyRejected(VMSubmitError):
    """The admin policy refused the VM."""

    exit_code = 5


class SafetyRefused(VMSubmitError):
    """The execute side's safety rules would refuse the VM: one detail line per refused element."""

    exit_code = 9

    def __init__(self, refusals: Iterable[object], *, path: str | Path | None = None):
        lines = tuple(f"refused: {refusal}" for refusal in refusals)
        count = f"{len(lines)} element{'s' if len(lines) != 1 else ''}"
        super().__init__(f"the execute side's safety rules refuse {count} of the VM (listed above); "
                         "nothing was written or submitted", path=path)
        self.details = lines


class TargetError(VMSubmitError):
    """The target cannot express the VM (raised under ``--strict``)."""

    exit_code = 6


class NoGuestError(VMSubmitError):
    """No VM of a condor_vmsubmit job runs in the sandbox (``condor_vm_control``)."""

    exit_code = 7


class ControlError(VMSubmitError):
    """The running VM did not do what ``condor_vm_control`` asked."""

    exit_code = 8


class UnverifiedConfigError(UnsafeInputError):
    """The runner cannot be sure it reads the node's HTCondor configuration (the admin's policy)
    as the node does: running the VM would be running it unchecked."""
