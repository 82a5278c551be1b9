"""``condor_libvirt_submit DOMAIN.xml``: a libvirt domain as an HTCondor job."""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..formats import load
from .common import CONTEXT_SETTINGS, reports_errors
from .submit_options import SubmitOptions, submit_options, submit_spec


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="condor_libvirt_submit")
@click.argument("domain", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--validate", "-validate", is_flag=True,
              help="Validate DOMAIN against libvirt's RelaxNG schema first.")
@submit_options
@reports_errors
def main(domain: Path, validate: bool, options: SubmitOptions) -> None:
    """Submit the libvirt domain XML DOMAIN as an HTCondor job (see docs/libvirt-frontend.md)."""
    submit_spec(load(domain, "libvirt", validate=validate), options)
