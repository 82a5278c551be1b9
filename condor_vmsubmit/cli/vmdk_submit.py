"""``condor_vmdk_submit DISK``: a bare disk image (VMDK, qcow2 or raw) as an HTCondor job.

The image's headers give its format, size and (for a VMDK) the disk bus; the rest of the
machine comes from the options or the stated defaults (see docs/vmdk-frontend.md).  A split
or flat VMDK's extents, and with ``--allow-backing`` the backing chain, travel with the job.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..formats.vmdk import build
from .common import CONTEXT_SETTINGS, reports_errors
from .submit_options import SubmitOptions, submit_options, submit_spec

PROG = "condor_vmdk_submit"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name=PROG)
@click.argument("disk", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--cpus", "-cpus", type=click.IntRange(min=1), metavar="N", help="vCPUs [default: 1].")
@click.option("--memory", "-memory", metavar="SIZE", help="Guest memory, e.g. 2GiB or 512M [default: 1GiB].")
@click.option("--firmware", "-firmware", type=click.Choice(["bios", "efi"]), help="Boot firmware [default: bios].")
@click.option("--disk", "-disk", "extra_disks", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              metavar="IMAGE", help="Another disk image (VMDK, qcow2 or raw), repeatable.")
@click.option("--nic", "-nic", "nics", multiple=True, metavar="KIND[:NAME][,model=M][,mac=MAC][,link=down]",
              help="A NIC: user, network:NAME or bridge:NAME, repeatable; 'none' for no network "
                   "[default: one user-mode NIC].")
@click.option("--allow-backing", "-allow-backing", is_flag=True,
              help="Accept an image with a backing/parent file next to it; the chain is transferred too.")
@submit_options
@reports_errors
def main(disk: Path, cpus: int | None, memory: str | None, firmware: str | None, extra_disks: tuple[Path, ...],
         nics: tuple[str, ...], allow_backing: bool, options: SubmitOptions) -> None:
    """Submit the disk image DISK (VMDK of any subformat, qcow2 or raw) as an HTCondor VM job.

    The defaults used (1 vCPU, 1 GiB, BIOS, one user-mode NIC) are printed as notes."""
    spec, files = build(disk, cpus=cpus, memory=memory, firmware=firmware, hypervisor=options.hypervisor,
                        extra_disks=extra_disks, nics=nics, allow_backing=allow_backing)
    submit_spec(spec, options, () if options.no_transfer_disks else files)
