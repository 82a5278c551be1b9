"""``condor_vmsubmit``: tools around VM specs (inspect, policy-check)."""

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
@click.option("--json", "-json", "as_json", is_flag=True, help="Print the normalized spec as JSON.")
@click.option("--validate", "-validate", is_flag=True,
              help="Also validate against the format's schema (libvirt: its installed RelaxNG schema).")
@click.option("--profile", metavar="ID", help="OVF: the DeploymentOption profile [default: the appliance's].")
@click.option("--list-profiles", is_flag=True, help="OVF: list the DeploymentOption profiles and exit.")
@click.option("--system", metavar="ID", help="OVF: the VirtualSystem of a VirtualSystemCollection.")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE",
              help="OVF: set a ProductSection property (repeatable; its type is checked).")
@click.option("--show-eula", is_flag=True, help="OVF: print the appliance's licence(s) and exit.")
@reports_errors
def inspect(file: Path, as_json: bool, validate: bool, profile: str | None, list_profiles: bool,
            system: str | None, properties: tuple[str, ...], show_eula: bool) -> None:
    """Show what FILE describes: vcpus, memory, firmware, disks, NICs, shared folders."""
    if list_profiles or show_eula:
        from ..formats.ovf import choose_profile, open_appliance
        from .ovf_submit import print_eula, print_profiles

        appliance = open_appliance(file, system, validate)
        (print_profiles if list_profiles else print_eula)(appliance, choose_profile(appliance, profile))
        return
    ovf_options = {"profile": profile, "system": system}
    if properties:
        from .ovf_submit import parse_properties

        ovf_options["properties"] = parse_properties(properties)
    spec = load(file, validate=validate, **ovf_options)
    if as_json:
        click.echo(spec.to_json())
        return
    from rich.console import Console

    from .inspect_view import render

    render(spec, Console())


@main.command("policy-check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--policy", "-policy", "stylesheets", multiple=True, metavar="XSL",
              type=click.Path(path_type=Path, dir_okay=False), help="An admin policy stylesheet (repeatable).")
@click.option("--max-memory", metavar="SIZE", help="Reject more guest memory than this (e.g. 4GiB).")
@click.option("--max-vcpus", type=click.IntRange(min=1), help="Reject more vcpus than this.")
@click.option("--allow-network", multiple=True, metavar="NAME", help="A libvirt network or bridge jobs may join.")
@click.option("--allow-bus", multiple=True, metavar="BUS", help="A disk bus jobs may use (default: any).")
@click.option("--xml", "show_xml", is_flag=True, help="Also print the domain XML the policy produced.")
@reports_errors
def policy_check(file: Path, stylesheets: tuple[Path, ...], max_memory: str | None, max_vcpus: int | None,
                 allow_network: tuple[str, ...], allow_bus: tuple[str, ...], show_xml: bool) -> None:
    """Show what the admin policy does to the VM in FILE: accepted, modified or rejected.

    FILE is libvirt domain XML, an OVF/OVA appliance or a disk image; the policy sees the
    domain the runner would start from it, as on the execute node.  Without policy options,
    the policy comes from this machine's HTCondor configuration (VMSUBMIT_POLICY_XSLT,
    VMSUBMIT_MAX_MEMORY_MB, VMSUBMIT_MAX_VCPUS, VMSUBMIT_ALLOWED_NETWORKS, VMSUBMIT_ALLOWED_BUSES,
    VMSUBMIT_ALLOW_HOST_MEDIA).  Exits 5 when the policy rejects the VM, 9 when the safety rules
    refuse it (one line per refused element), as they would on the execute node.
    """
    from lxml import etree

    from ..checks import knobs
    from ..checks.policy import Policy
    from ..checks.preflight import preflight
    from ..errors import InputError, PolicyRejected, SafetyRefused
    from ..units import UnitError, parse_size

    if stylesheets or max_memory or max_vcpus or allow_network or allow_bus:
        try:
            memory = parse_size(max_memory) if max_memory else None
        except UnitError as exc:
            raise InputError(f"--max-memory: {exc}") from None
        buses = knobs.ALLOWED_BUSES.parse("--allow-bus", " ".join(allow_bus))  # any case, as in the knob
        policy = Policy(stylesheets, memory, max_vcpus, frozenset(allow_network), frozenset(buses))
    else:
        policy = Policy.from_config()
    checked = preflight(file, policy)
    result = checked.policy
    click.echo(f"policy: {result.verdict}")
    for line in result.changes + tuple(f"note: {note}" for note in result.notes):
        click.echo(f"  {line}")
    if result.verdict == "rejected":
        raise PolicyRejected(f"policy rejected the VM: {result.reason}", path=file)
    if checked.refusals:
        raise SafetyRefused(checked.refusals, path=file)
    if show_xml:
        click.echo(etree.tostring(result.root, encoding="unicode"))
