"""``condor_ovf_submit APPLIANCE.(ovf|ova)``: an OVF/OVA appliance as an HTCondor job.

The descriptor is read without unpacking anything; ``--list-profiles`` and
``--show-eula`` only print.  On submit, the disks the chosen system uses are verified
against the manifest and, for an OVA, streamed once out of the tar into the job's
output folder, from where the job transfers them (see docs/ovf-frontend.md).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from .. import __version__
from ..errors import InputError, SafetyRefused
from ..formats.ovf import Appliance, choose_profile, open_appliance, spec_from_appliance
from ..formats.ovf.extract import extract_disks, plan_disks
from ..spec import VMSpec
from ..translate import safe_file_stem
from ..units import UnitError, parse_size
from .common import CONTEXT_SETTINGS, reports_errors
from .submit_options import SubmitOptions, submit_options, submit_spec


def parse_properties(items: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` pairs from repeated ``--property`` options.

    >>> parse_properties(("a=1", "b.c=x=y"))
    {'a': '1', 'b.c': 'x=y'}
    """
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--property '{item}' is not KEY=VALUE")
        values[key.strip()] = value
    return values


def print_profiles(appliance: Appliance, chosen: str | None) -> None:
    """One line per DeploymentOption profile, the one that would be used marked with ``*``."""
    profiles = appliance.profiles
    if not profiles:
        click.echo("no deployment profiles: the appliance has one configuration")
        return
    for profile in profiles:
        mark = "*" if profile.profile_id == chosen else " "
        default = " (default)" if profile.default else ""
        detail = " - ".join(filter(None, (profile.label, profile.description)))
        click.echo(f"{mark} {profile.profile_id}{default}" + (f": {detail}" if detail else ""))


def print_eula(appliance: Appliance, profile: str | None) -> None:
    """Every licence the chosen system carries, separated by rules."""
    eulas = appliance.product(profile).eulas
    if not eulas:
        click.echo("the appliance has no EULA")
    for number, text in enumerate(eulas, 1):
        click.echo(f"--- EULA {number} of {len(eulas)} ---")
        click.echo(text)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="condor_ovf_submit")
@click.argument("appliance", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--profile", "-profile", metavar="ID", help="DeploymentOption profile [default: the appliance's].")
@click.option("--list-profiles", "-list-profiles", is_flag=True, help="List the profiles and exit.")
@click.option("--system", "-system", metavar="ID", help="The VirtualSystem of a VirtualSystemCollection.")
@click.option("--property", "-property", "properties", multiple=True, metavar="KEY=VALUE",
              help="Set a ProductSection property (repeatable); its declared type is checked.")
@click.option("--show-eula", "-show-eula", is_flag=True, help="Print the licence(s) and exit.")
@click.option("--accept-eula", "-accept-eula", is_flag=True, help="Accept the appliance's licence(s).")
@click.option("--memory", "-memory", metavar="SIZE",
              help="Guest memory (e.g. 2GiB) when the appliance gives none, or to override it.")
@click.option("--validate", "-validate", is_flag=True, help="Validate the descriptor against our OVF XSD first.")
@submit_options
@reports_errors
def main(appliance: Path, profile: str | None, list_profiles: bool, system: str | None,
         properties: tuple[str, ...], show_eula: bool, accept_eula: bool, memory: str | None,
         validate: bool, options: SubmitOptions) -> None:
    """Submit the OVF descriptor or OVA appliance APPLIANCE as an HTCondor job."""
    opened = open_appliance(appliance, system, validate)
    if list_profiles:
        print_profiles(opened, choose_profile(opened, profile))
        return
    if show_eula:
        print_eula(opened, choose_profile(opened, profile))
        return
    spec = spec_from_appliance(opened, profile, parse_properties(properties))
    if memory is not None:
        try:
            spec = replace(spec, memory_bytes=parse_size(memory))
        except UnitError as error:
            raise InputError(f"--memory: {error}") from None
    if spec.memory_bytes == 0:
        raise InputError("the appliance gives no memory: say how much with --memory SIZE", path=appliance)
    if spec.extras.get("eula") == "yes" and not accept_eula and not options.dry_run:
        raise InputError("the appliance has a EULA: read it with --show-eula, then submit with --accept-eula",
                         path=appliance)
    folder = output_folder(spec, options)
    before = set(folder.iterdir()) if folder.is_dir() else None
    try:
        submit_spec(extract(spec, options), options)  # the translator reports spec.warnings as notes
    except SafetyRefused:  # nothing stays written: remove what extract() extracted from an OVA
        if folder.is_dir():
            for path in set(folder.iterdir()) - (before or set()):
                path.unlink()
            if before is None:
                folder.rmdir()
        raise


def output_folder(spec: VMSpec, options: SubmitOptions) -> Path:
    """Where the job's files go: --output-dir, else NAME.vmjob here."""
    return (options.output_dir or Path.cwd() / f"{safe_file_stem(spec.name)}.vmjob").absolute()


def extract(spec: VMSpec, options: SubmitOptions) -> VMSpec:
    """The spec with disk sources the job can transfer: verified (and, from an OVA, extracted)
    into the output folder; on --dry-run only planned, on --no-transfer-disks left as named."""
    if options.no_transfer_disks or not any(disk.source for disk in spec.disks):
        return spec
    folder = output_folder(spec, options)
    if options.dry_run:
        click.echo(f"condor_ovf_submit: note: dry run: the disks are not verified; files to extract "
                   f"would go to {folder}", err=True)
        return plan_disks(spec, folder).apply(spec)
    files = extract_disks(spec, folder, progress=sys.stderr.isatty())
    for warning in files.warnings:
        click.echo(f"condor_ovf_submit: warning: {spec.source_path}: {warning}", err=True)
    return files.apply(spec)
