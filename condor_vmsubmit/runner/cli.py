"""``condor_vm_runner``: the job's executable on an execute node.

Run by the starter in the job's scratch directory with ``$_CONDOR_JOB_AD`` and
``$_CONDOR_MACHINE_AD`` set; its exit code is the guest's (or one of the runner's own,
see :mod:`condor_vmsubmit.runner.lifecycle`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .. import jobcontract
from ..cli.common import CONTEXT_SETTINGS
from ..errors import UnsafeInputError, VMSubmitError
from .chirp import Reporter
from .lifecycle import Options, run
from .sandbox import load_job
from .script_backend import configured_script_dir
from .usage import DEFAULT_INTERVAL


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--libvirt-uri", "uri", envvar="VMSUBMIT_LIBVIRT_URI", default=None,
              help="libvirt to use (default: a private qemu:///session in the sandbox).")
@click.option("--usage-interval", type=click.FloatRange(min=1.0), default=DEFAULT_INTERVAL, show_default=True,
              envvar="VMSUBMIT_USAGE_INTERVAL", help="Seconds between usage reports.")
@click.option("--script-dir", type=click.Path(path_type=Path, file_okay=False), envvar="VMSUBMIT_SCRIPT_DIR",
              default=None, help="Admin scripts for script-managed hypervisors (default: knob VMSUBMIT_SCRIPT_DIR).")
def main(uri: str | None, usage_interval: float, script_dir: Path | None) -> None:
    """Run the VM of the HTCondor job in this sandbox until the guest ends."""
    reporter = Reporter()
    try:
        job = load_job(os.environ, Path.cwd())
        options = Options(uri=uri, usage_interval=usage_interval,
                          script_dir=script_dir or configured_script_dir())
        code = run(job, options, reporter)
    except VMSubmitError as error:
        # Bad input the runner cannot even start with: the job is held with the reason.
        reporter.set_attrs({jobcontract.HOLD_REASON_ATTR: error.one_line()})
        click.echo(f"condor_vm_runner: error: {error.one_line()}", err=True)
        code = jobcontract.EXIT_REFUSED if isinstance(error, UnsafeInputError) else jobcontract.EXIT_START_FAILED
    sys.exit(code)
