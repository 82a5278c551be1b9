"""Which hypervisor runs the job on this node: KVM only where it really boots a guest, and of a
list the job gives (``--hypervisor kvm,qemu``), the first this node runs."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ..attributes import VM_HYPERVISORS
from ..classads import hypervisor_names, script_managed
from .guard import node_cache
from .job import Job


def kvm_usable(machine_ad_hypervisors: list[str] | None) -> bool:
    """Whether KVM really runs guests here: discovery's word in the machine ad, else a boot probe
    (cached for this boot of the host)."""
    if machine_ad_hypervisors is not None:
        return "kvm" in machine_ad_hypervisors
    if not os.path.exists("/dev/kvm"):
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    folder = node_cache()
    cache = folder / "kvm" if folder is not None else None
    if cache is not None and cache.is_file() and cache.read_text().split()[:1] == [boot_id]:
        return cache.read_text().split()[1:] == ["yes"]
    from ..kvmprobe import boot_probe, probe_rom

    with tempfile.TemporaryDirectory() as tmp:
        rom = Path(tmp, "probe.rom")
        rom.write_bytes(probe_rom())
        ok = boot_probe("/usr/bin/qemu-system-x86_64", "kvm", rom).ok
    if cache is not None:
        cache.write_text(f"{boot_id} {'yes' if ok else 'no'}\n")
    return ok


def hypervisors_in_ad(job: Job) -> list[str] | None:
    """The hypervisors discovery advertises in the machine ad (``VM_HYPERVISORS``), None without it."""
    value = job.machine_ad.get(VM_HYPERVISORS.name)
    return [str(v) for v in value] if isinstance(value, list) else None


def choose_hypervisor(job: Job) -> Job:
    """The job with the hypervisor this node runs it with: of a list (``--hypervisor kvm,qemu``), the
    first that works here (kvm when it really does, qemu, a script discovery found), else the first
    (which verification then refuses); a single name or any is kept."""
    names = hypervisor_names(job.spec.hypervisor)
    if len(names) == 1:
        return job
    advertised = hypervisors_in_ad(job) or []
    usable = {"qemu"} | ({"kvm"} if "kvm" in names and kvm_usable(hypervisors_in_ad(job)) else set())
    chosen = next((name for name in names if name in usable or (script_managed(name) and name in advertised)),
                  names[0])
    return replace(job, spec=replace(job.spec, hypervisor=chosen))
