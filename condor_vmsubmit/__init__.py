"""condor_vmsubmit: run libvirt domains, OVF/OVA appliances and VMDK disks as HTCondor jobs."""

__version__ = "0.1.0"
