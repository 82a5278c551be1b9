"""``condor_vm_runner``: the job's executable on an execute node.

Run by the starter in the job's scratch directory with ``$_CONDOR_JOB_AD`` and
``$_CONDOR_MACHINE_AD`` set; its exit code is the guest's (or one of the runner's own,
see :mod:`condor_vmsubmit.runner.lifecycle`).

The runner is on the path of every start and of every restore after an eviction, so it
starts the job's libvirtd first, before it imports anything heavy: the daemon comes up
while libvirt, the admin policy and the safety rules are imported and the job is checked.
That is also why its three options are parsed with argparse, not click.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import jobcontract
from ..classads import script_managed
from ..domain.sandbox import Sandbox
from ..errors import ConfigError, UnsafeInputError, VMSubmitError
from .chirp import Reporter
from .follow import write_to_stdout
from .guard import GuardianProcess
from .sandbox import ad_files, read_spec, sandbox_root


def usage_interval(text: str) -> float:
    """Seconds between usage reports, at least one.

    >>> usage_interval("2.5")
    2.5
    >>> usage_interval("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: at least 1 second, not 0
    """
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 1.0:
        raise argparse.ArgumentTypeError(f"at least 1 second, not {text}")
    return seconds


def parse_options(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """The command line, each option defaulting to its environment variable."""
    parser = argparse.ArgumentParser(prog="condor_vm_runner", add_help=False,
                                     description="Run the VM of the HTCondor job in this sandbox until the guest ends.")
    parser.add_argument("-h", "--help", "-help", action="help", help="Show this message and exit.")
    parser.add_argument("--libvirt-uri", dest="uri", metavar="URI", default=environ.get("VMSUBMIT_LIBVIRT_URI") or None,
                        help="libvirt to use (env VMSUBMIT_LIBVIRT_URI; "
                             "default: a private qemu:///session in the sandbox).")
    parser.add_argument("--usage-interval", metavar="SECONDS", type=usage_interval,
                        default=environ.get("VMSUBMIT_USAGE_INTERVAL") or jobcontract.USAGE_INTERVAL_SECONDS,
                        help="Seconds between usage reports (env VMSUBMIT_USAGE_INTERVAL; default: %(default)s).")
    parser.add_argument("--script-dir", metavar="DIR", type=Path, default=environ.get("VMSUBMIT_SCRIPT_DIR") or None,
                        help="Admin scripts for script-managed hypervisors (env VMSUBMIT_SCRIPT_DIR; "
                             "default: knob VMSUBMIT_SCRIPT_DIR).")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the job's VM; exit with the runner's exit code."""
    options = parse_options(argv, os.environ)
    reporter = Reporter()
    guardian = None
    try:
        ads = ad_files(os.environ)
        sandbox = Sandbox(sandbox_root(os.environ, Path.cwd()).resolve())
        spec = read_spec(sandbox)
        if options.uri is None and not script_managed(spec.hypervisor):
            guardian = GuardianProcess(sandbox.state_dir)
        # Imported only now, while the job's libvirtd comes up (see above).
        from ..checks import knobs
        from ..config import use_node_config
        from .backend import Options
        from .job import load_job
        from .lifecycle import run
        from .periodic import checkpoint_interval

        job = load_job(ads, sandbox, spec)
        use_node_config(job.machine_ad)  # the admin's policy as the node's daemons see it, or a hold
        every = checkpoint_interval(job.job_ad, knobs.read((knobs.MIN_CHECKPOINT_INTERVAL,
                                                            knobs.MAX_CHECKPOINT_INTERVAL)))
        code = run(job, Options(uri=options.uri, usage_interval=options.usage_interval,
                                script_dir=options.script_dir, checkpoint_interval=every,
                                console_sink=write_to_stdout), reporter, guardian)
    except VMSubmitError as error:
        # Bad input the runner cannot even start with: the job is held with the reason.
        reporter.set_attrs({jobcontract.HOLD_REASON_ATTR: error.one_line()})
        print(f"condor_vm_runner: error: {error.one_line()}", file=sys.stderr)
        code = (jobcontract.EXIT_REFUSED if isinstance(error, UnsafeInputError)
                else jobcontract.EXIT_MISMATCH if isinstance(error, ConfigError)  # the node's knobs, not the job
                else jobcontract.EXIT_START_FAILED)
    finally:
        if guardian is not None:
            guardian.stop()
    # Nothing of the job is left running: leave at once, without the interpreter's teardown
    # (libvirt's and the ClassAd library's destructors, tens of milliseconds an eviction waits for).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
