"""A readable summary of a :class:`VMSpec` for people, rendered with rich."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ..spec import VMSpec
from ..units import human_bytes


def render(spec: VMSpec, console: Console) -> None:
    """Print the spec as a panel of facts and tables of disks, NICs and shared folders.

    Every string from the input goes through :func:`rich.markup.escape`: a name or
    path such as ``[red]x`` must print as written, not as markup.
    """
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    vcpus = str(spec.vcpus)
    if spec.vcpus_current is not None and spec.vcpus_current != spec.vcpus:
        vcpus += f" (current {spec.vcpus_current})"
    rows = [
        ("source", f"{spec.source_format}: {spec.source_path or '-'}"),
        ("vcpus", vcpus),
        ("memory", f"{human_bytes(spec.memory_bytes)} ({spec.memory_bytes} bytes)"),
        ("firmware", spec.firmware),
        ("hypervisor", spec.hypervisor or "any"),
    ]
    if spec.arch or spec.machine:
        rows.append(("machine", " ".join(filter(None, (spec.arch, spec.machine)))))
    if spec.kernel_boot:
        rows.append(("kernel", spec.kernel_boot.kernel))
        if spec.kernel_boot.initrd:
            rows.append(("initrd", spec.kernel_boot.initrd))
        if spec.kernel_boot.cmdline:
            rows.append(("cmdline", spec.kernel_boot.cmdline))
    if spec.consoles:
        rows.append(("consoles", ", ".join(c.kind + (f" ({c.target})" if c.target else "") for c in spec.consoles)))
    for key, value in spec.extras.items():
        rows.append((key, value))
    for key, value in rows:
        facts.add_row(escape(key), escape(value))
    parts: list = [facts]

    if spec.disks:
        disks = Table(title="disks", title_justify="left", expand=False)
        for column in ("device", "target", "bus", "format", "capacity", "ro"):
            disks.add_column(column)
        disks.add_column("source", overflow="fold")  # a path people need whole, not "/var/lib/…"
        for disk in spec.disks:
            capacity = human_bytes(disk.capacity_bytes) if disk.capacity_bytes is not None else "-"
            source = disk.source or "-"
            if disk.source_type != "file":
                source = f"[{disk.source_type}] {source}"
            disks.add_row(disk.device, escape(disk.target or "-"), escape(disk.bus or "-"),
                          escape(disk.format or "-"), capacity, "yes" if disk.readonly else "", escape(source))
        parts.append(disks)
    if spec.nics:
        nics = Table(title="network interfaces", title_justify="left")
        for column in ("model", "mac", "attached to", "link"):
            nics.add_column(column)
        for nic in spec.nics:
            attached = nic.network_kind + (f": {nic.network}" if nic.network else "")
            link = "[red]down[/red]" if nic.link == "down" else "up"
            nics.add_row(escape(nic.model or "-"), escape(nic.mac or "-"), escape(attached), link)
        parts.append(nics)
    if spec.shared_folders:
        shares = Table(title="shared folders", title_justify="left")
        for column in ("source", "mount tag", "driver", "ro"):
            shares.add_column(column)
        for share in spec.shared_folders:
            shares.add_row(escape(share.source), escape(share.target), escape(share.driver or "-"),
                           "yes" if share.readonly else "")
        parts.append(shares)
    if spec.warnings:
        parts.append("\n".join(f"[yellow]warning:[/yellow] {escape(w)}" for w in spec.warnings))
    console.print(Panel(Group(*parts), title=f"[bold]{escape(spec.name)}[/bold]", expand=False))
