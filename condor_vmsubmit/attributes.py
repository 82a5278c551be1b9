"""Every ``VM_*`` attribute, defined once: what execute nodes advertise in the machine ad
(``condor_vm_discover`` prints them, the translator's Requirements read them) and what a job
says about its VM in the job ad (the translator writes them, Requirements and the runner read
them).  docs/attributes.md and docs/admin-guide.md explain them; tests check that they list
every one.

Discovery builds its ad from :data:`NODE_ATTRIBUTES` and :data:`HYPERVISOR_FACTS`, and
:mod:`condor_vmsubmit.translate.matchmaking` names the same definitions in its clauses
(:meth:`Fact.target`, :meth:`Fact.target_of`): renaming one renames both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

from .classads import hypervisor_attr


@dataclass(frozen=True)
class Fact:
    """One advertised attribute: its name, ClassAd type and meaning (docs/admin-guide.md).

    A node attribute's name is the whole attribute name; a hypervisor fact's is the ``<NAME>`` of
    ``VM_<HV>_ATTR_<NAME>``, one attribute per advertised hypervisor.
    """

    name: str
    classad_type: str
    meaning: str

    @property
    def target(self) -> str:
        """The node attribute as a Requirements expression names it.

        >>> VM_TYPES.target
        'TARGET.VM_TYPES'
        """
        return f"TARGET.{self.name}"

    def of(self, hypervisor: str) -> str:
        """The hypervisor fact's attribute name for ``hypervisor``.

        >>> MAX_VCPUS.of("qemu-direct")
        'VM_QEMU_DIRECT_ATTR_MAX_VCPUS'
        """
        return hypervisor_attr(hypervisor, self.name)

    def target_of(self, hypervisor: str) -> str:
        """The hypervisor fact as a Requirements expression names it."""
        return f"TARGET.{self.of(hypervisor)}"


# --- the machine ad: what this node can run -------------------------------------------------------

VM_TYPES = Fact("VM_TYPES", "string list", "libvirt-managed when libvirt runs at least one hypervisor here; "
                                           "script-managed when at least one admin script discovers")
VM_HYPERVISORS = Fact("VM_HYPERVISORS", "string list", "every hypervisor that really runs a guest here: libvirt "
                                                       "domain types (kvm, qemu, xen ...) and script-managed names")
VM_RUNNER_VERSION = Fact("VM_RUNNER_VERSION", "string",
                         "version of condor_vmsubmit (and so of condor_vm_runner) here")
VM_DISCOVERY_ERROR = Fact("VM_DISCOVERY_ERROR", "string", "why less is claimed than may be there: libvirt could "
                                                          "not be asked, or no runner is installed (undefined when "
                                                          "all is well)")
VM_DISCOVERY_NOTES = Fact("VM_DISCOVERY_NOTES", "string",
                          "why a hypervisor or script was left out (undefined when none)")
VM_IMAGES = Fact("VM_IMAGES", "string list", "names of the base images an admin staged in VMSUBMIT_IMAGE_DIR "
                                             "(docs/staged-images.md); empty when none")
VM_CONDOR_CONFIG = Fact("VM_CONDOR_CONFIG", "string", "the HTCondor configuration file the node's daemons read "
                                                      "(CONDOR_CONFIG, else HTCondor's search): the runner reads "
                                                      "the same, as a job has no CONDOR_CONFIG")
VM_CONFIG_DIGEST = Fact("VM_CONFIG_DIGEST", "string", "digest of every VMSUBMIT_* knob as discovery saw them: the "
                                                      "runner holds a job rather than run it when it sees other "
                                                      "values")
VM_DISCOVERY_AGE = Fact("VM_DISCOVERY_AGE", "integer", "seconds since what is advertised was verified: 0 when this "
                                                       "run checked it all; more when a run too slow to check a "
                                                       "hypervisor kept an earlier run's verdict "
                                                       "(VMSUBMIT_DISCOVERY_KEEP)")
VM_SCREEN_VIDEO = Fact("VM_SCREEN_VIDEO", "boolean", "ffmpeg is installed: a job's --capture-screen also gives a "
                                                     "video (VP8 in WebM); frames are captured either way")

NODE_ATTRIBUTES = (VM_TYPES, VM_HYPERVISORS, VM_RUNNER_VERSION, VM_DISCOVERY_ERROR, VM_DISCOVERY_NOTES, VM_IMAGES,
                   VM_CONDOR_CONFIG, VM_CONFIG_DIGEST, VM_DISCOVERY_AGE, VM_SCREEN_VIDEO)

# VM_<HV>_ATTR_<NAME> for every libvirt hypervisor advertised (scripts print their own).
MAX_VCPUS = Fact("MAX_VCPUS", "integer", "most vCPUs one guest may have: domain capabilities of the default "
                                         "machine type, lowered to VMSUBMIT_MAX_VCPUS when set")
MACHINE_TYPES = Fact("MACHINE_TYPES", "string list", "machine types of the host architecture, aliases included")
ARCHES = Fact("ARCHES", "string list", "guest architectures")
EFI = Fact("EFI", "boolean", "UEFI firmware is installed and libvirt can use it")
DISK_BUSES = Fact("DISK_BUSES", "string list", "disk buses (domain capabilities), within VMSUBMIT_ALLOWED_BUSES")
NIC_MODELS = Fact("NIC_MODELS", "string list", "NIC models in libvirt's spelling, from the emulator's "
                                               "-nic model=help (QEMU-based hypervisors only)")
VIRTIOFS = Fact("VIRTIOFS", "boolean", "virtiofs shared folders: QEMU supports them and the runner can start "
                                       "virtiofsd (installed, and discovery runs as root as such jobs do; "
                                       "others share over 9p)")
NETWORKS = Fact("NETWORKS", "string list", "active libvirt networks named in VMSUBMIT_ALLOWED_NETWORKS")
BRIDGES = Fact("BRIDGES", "string list", "host bridges named in VMSUBMIT_ALLOWED_NETWORKS")

HYPERVISOR_FACTS = (MAX_VCPUS, MACHINE_TYPES, ARCHES, EFI, DISK_BUSES, NIC_MODELS, VIRTIOFS, NETWORKS, BRIDGES)

# --- the job ad: what the translator writes about the VM (``MY.<name>``, runner target) ----------

JOB_VM_TYPE = "VM_TYPE"
JOB_HYPERVISOR = "VM_HYPERVISOR"
JOB_SOURCE_FORMAT = "VM_ATTR_SOURCE_FORMAT"
JOB_NAME = "VM_ATTR_NAME"
JOB_VCPUS = "VM_ATTR_VCPUS"
JOB_MEMORY_MB = "VM_ATTR_MEMORY_MB"
JOB_FIRMWARE = "VM_ATTR_FIRMWARE"
JOB_ARCH = "VM_ATTR_ARCH"
JOB_DISKS = "VM_ATTR_DISKS"
JOB_CDROMS = "VM_ATTR_CDROMS"
JOB_FLOPPIES = "VM_ATTR_FLOPPIES"
JOB_NICS = "VM_ATTR_NICS"
JOB_SHARED_FOLDERS = "VM_ATTR_SHARED_FOLDERS"
JOB_DISK_BUSES = "VM_ATTR_DISK_BUSES"
JOB_NIC_MODELS = "VM_ATTR_NIC_MODELS"
JOB_KERNEL_BOOT = "VM_ATTR_KERNEL_BOOT"
JOB_IMAGES = "VM_ATTR_IMAGES"
JOB_DISKS_TRANSFERRED = "VM_ATTR_DISKS_TRANSFERRED"
JOB_CAPTURE_SCREEN = "VM_ATTR_CAPTURE_SCREEN"
