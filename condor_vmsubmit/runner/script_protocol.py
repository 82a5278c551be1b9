"""The script-managed VM type: admin-installed executables, one per hypervisor name.

Protocol (docs/script-managed.md): the runner calls ``SCRIPT ACTION JOB_AD_FILE`` with the job's
sandbox as working directory and ``VMSUBMIT_SANDBOX`` / ``VMSUBMIT_SPEC`` in the environment.
The exit code says what happened:

* 0 -- executed
* 1 -- rejected (the reason is the last line on stderr)
* 2 -- modified (the modified job ad is on stdout; the runner reports the change)
* 3 -- not implemented (the runner falls back or tells the user)

``start`` runs for the life of the guest: it returns when the guest is gone.  The runner starts it
with a parent-death signal, so a runner killed with SIGKILL takes the guest with it.
"""

from __future__ import annotations

import ctypes
import enum
import os
import re
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError

ACTIONS = ("discover", "verify", "start", "status", "pause", "resume", "checkpoint", "stop", "screenshot")
# ``screenshot`` writes the guest's display now, as a PNG or PPM file, where this variable says.
SCREENSHOT_ENV = "VMSUBMIT_SCREENSHOT"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PR_SET_PDEATHSIG = 1
# How much of the end of a script's stderr is read for the reason of a failure.
TAIL_BYTES = 64 * 1024


class ScriptOutcome(enum.IntEnum):
    """What a script's exit code means."""

    EXECUTED = 0
    REJECTED = 1
    MODIFIED = 2
    NOT_IMPLEMENTED = 3
    FAILED = 255  # any other exit code, a timeout or a script that would not run

    @classmethod
    def from_exit_code(cls, code: int) -> ScriptOutcome:
        return cls(code) if code in (0, 1, 2, 3) else cls.FAILED


@dataclass(frozen=True)
class ActionResult:
    """One action's outcome, its stdout (a status word, a modified ad, discovery lines) and reason."""

    action: str
    outcome: ScriptOutcome
    stdout: str
    reason: str


def find_script(hypervisor: str, script_dir: Path) -> Path:
    """The admin's script for ``hypervisor``; refuse names and files a user could have planted
    (:func:`script_refusal`)."""
    if not _NAME.match(hypervisor):
        raise InputError(f"'{hypervisor}' is not a valid script-managed hypervisor name")
    script = script_dir / hypervisor
    try:
        script.stat()
    except OSError:
        raise InputError(f"no script for hypervisor '{hypervisor}' in {script_dir}") from None
    reason = script_refusal(script)
    if reason:
        raise InputError(f"{script} is {reason}")
    return script


def script_refusal(script: Path) -> str | None:
    """Why ``script`` may not act as a hypervisor, or None: its name must be a plain word, and the
    file a regular executable that is not writable by group or others."""
    if not _NAME.match(script.name):
        return "not a hypervisor name (lower-case letters, digits, '-' and '_')"
    try:
        info = script.stat()
    except OSError as error:
        return f"cannot stat: {error.strerror}"
    if not stat.S_ISREG(info.st_mode) or not os.access(script, os.X_OK):
        return "not an executable file"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by group or others; refusing to run it"
    return None


def script_environment(sandbox: Path, spec_file: Path) -> dict[str, str]:
    """The environment every action runs with."""
    env = dict(os.environ)
    env["VMSUBMIT_SANDBOX"] = str(sandbox)
    env["VMSUBMIT_SPEC"] = str(spec_file)
    return env


def run_action(script: Path, action: str, job_ad_file: Path, sandbox: Path, spec_file: Path,
               timeout: float = 120.0, environment: dict[str, str] | None = None) -> ActionResult:
    """Run one short action (anything but ``start``) and interpret its exit code; ``environment``
    adds to the environment every action gets."""
    if action not in ACTIONS or action == "start":
        raise ValueError(f"not a short script action: {action}")
    try:
        env = {**script_environment(sandbox, spec_file), **(environment or {})}
        done = subprocess.run([str(script), action, str(job_ad_file)], cwd=sandbox, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ActionResult(action, ScriptOutcome.FAILED, "", f"'{action}' did not finish in {timeout:.0f} s")
    except OSError as exc:
        return ActionResult(action, ScriptOutcome.FAILED, "", f"cannot run {script}: {exc.strerror}")
    return ActionResult(action, ScriptOutcome.from_exit_code(done.returncode), done.stdout,
                        last_line(done.stderr) or f"exit code {done.returncode}")


def start_guest(script: Path, job_ad_file: Path, sandbox: Path, spec_file: Path,
                console: Path | None = None, errors: BinaryIO | None = None) -> subprocess.Popen:
    """Launch ``SCRIPT start``; it lives as long as the guest and dies with this process.

    ``console`` is where the guest's serial console must go (``VMSUBMIT_CONSOLE``); ``errors``
    is a file that takes the script's stderr (discarded when None).  Never a pipe: nobody reads
    it while the guest runs, and a script that wrote more than a pipe holds would block.
    """
    env = script_environment(sandbox, spec_file)
    if console is not None:
        env["VMSUBMIT_CONSOLE"] = str(console)
    return subprocess.Popen([str(script), "start", str(job_ad_file)], cwd=sandbox, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if errors is None else errors,
                            preexec_fn=die_with_parent)


def read_tail(file: BinaryIO, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``file`` (where the reason of a failure is), as text.

    >>> import io
    >>> read_tail(io.BytesIO(b"x" * 100 + b"\\nno such disk\\n"), limit=15)
    'x\\nno such disk\\n'
    """
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - limit))
    return file.read().decode(errors="replace")


def die_with_parent() -> None:
    """In a child before exec: receive SIGKILL when the parent dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def last_line(text: str) -> str:
    """The last non-empty line of ``text``.

    >>> last_line("warming up\\nno such disk: a.img\\n\\n")
    'no such disk: a.img'
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
