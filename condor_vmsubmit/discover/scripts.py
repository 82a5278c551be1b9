"""Script discovery: every admin script in ``VMSUBMIT_SCRIPT_DIR`` asked its ``discover`` action.

A script may act as a hypervisor by the runner's rules (:func:`~condor_vmsubmit.runner.script_protocol.script_refusal`);
it runs as ``SCRIPT discover /dev/null`` (there is no job ad yet), all in parallel, until the deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ..runner.script_protocol import last_line, script_refusal
from .ad import ScriptAnswer
from .deadline import Deadline, in_thread


def start_scripts(script_dir: Path | None,
                  cwd: Path) -> tuple[list[tuple[str, subprocess.Popen]], list[ScriptAnswer]]:
    """Launch ``SCRIPT discover /dev/null`` for every admin script (there is no job ad yet);
    scripts that may not run are answered at once."""
    if script_dir is None:
        return [], []
    running, refused = [], []
    try:
        entries = sorted(script_dir.iterdir())
    except OSError as error:
        return [], [ScriptAnswer(str(script_dir), False, reason=f"cannot list: {error.strerror}")]
    for script in entries:
        name = script.name
        if name.startswith("."):
            continue
        reason = script_refusal(script)
        if reason:
            refused.append(ScriptAnswer(name, False, reason=reason))
            continue
        try:
            running.append((name, subprocess.Popen(
                [str(script), "discover", os.devnull], cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)))
        except OSError as error:
            refused.append(ScriptAnswer(name, False, reason=f"cannot run: {error.strerror}"))
    return running, refused


def collect_scripts(running: list[tuple[str, subprocess.Popen]], deadline: Deadline) -> list[ScriptAnswer]:
    """Read every script's output in parallel until the deadline; kill the whole process group of
    the ones still going (or still holding their output open)."""
    readers = [(name, process, in_thread(process.communicate)) for name, process in running]
    answers = []
    for name, process, wait in readers:
        finished, output = wait(deadline.left())
        if not finished or not isinstance(output, tuple):
            os.killpg(process.pid, signal.SIGKILL)
            wait(0.2)  # reap it; its pipes close with the group
            answers.append(ScriptAnswer(name, False, reason="discover did not finish in time", timed_out=True))
            continue
        stdout, stderr = output
        if process.returncode == 0:
            answers.append(ScriptAnswer(name, True, stdout=stdout))
            continue
        why = f": {line}" if (line := last_line(stderr)) else ""
        answers.append(ScriptAnswer(name, False, reason=f"discover exited {process.returncode}{why}"))
    return answers
