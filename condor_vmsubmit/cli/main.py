"""``condor_vmsubmit``: tools around VM specs (inspect, and later policy-check)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..formats import load
from .common import CONTEXT_SETTINGS, reports_errors


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="condor_vmsubmit")
def main() -> None:
    """Read libvirt domain XML, OVF/OVA appliances and VMDK images as HTCondor VM jobs."""


@main.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the normalized spec as JSON.")
@click.option("--validate", is_flag=True, help="Also validate against the format's schema.")
@reports_errors
def inspect(file: Path, as_json: bool, validate: bool) -> None:
    """Show what FILE describes: vcpus, memory, firmware, disks, NICs, shared folders."""
    spec = load(file, validate=validate)
    if as_json:
        click.echo(spec.to_json())
        return
    from rich.console import Console

    from .inspect_view import render

    render(spec, Console())
