"""``condor_vm_discover``: print this node's VM capabilities for the startd's cron
(the parts: :mod:`condor_vmsubmit.discover`)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..checks import knobs
from ..discover.ad import cron_text
from ..discover.deadline import Deadline
from ..discover.probes import DEFAULT_URI
from ..discover.run import DEFAULT_TIMEOUT, KNOBS, advertise, settings_from
from .common import CONTEXT_SETTINGS, reports_errors


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("-uri", "--uri", help=f"libvirt URI (knob {knobs.LIBVIRT_URI.name}; default {DEFAULT_URI}).")
@click.option("-state-dir", "--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"libvirt session files and the probe cache (knob {knobs.DISCOVERY_STATE_DIR.name}; "
                   "default a private folder in the temp directory).")
@click.option("-script-dir", "--script-dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"admin scripts, one per script-managed hypervisor (knob {knobs.SCRIPT_DIR.name}).")
@click.option("-timeout", "--timeout", type=click.FloatRange(min=0.1),
              help=f"seconds for the whole discovery (default {DEFAULT_TIMEOUT:g}); a longer one "
                   "once by hand warms libvirt's caches.")
@click.version_option(__version__, prog_name="condor_vm_discover")
@reports_errors
def main(uri: str | None, state_dir: Path | None, script_dir: Path | None, timeout: float | None) -> None:
    """Print this node's VM capabilities as STARTD_CRON output (see docs/admin-guide.md)."""
    budget = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = Deadline(budget)  # reading the configuration counts too
    settings = settings_from(uri, state_dir, script_dir, budget, knobs.read(KNOBS))
    click.echo(cron_text(advertise(settings, deadline)), nl=False)
