"""``condor_vm_discover``'s parts: what this execute node can run, for the startd's cron.

Output (STARTD_CRON format: ``Attr = value`` lines, ClassAd literals, the ad ended by ``-``)::

    VM_TYPES = "libvirt-managed,script-managed"
    VM_HYPERVISORS = "qemu,qemu-direct"
    VM_RUNNER_VERSION = "0.1.0"
    VM_DISCOVERY_ERROR = undefined
    VM_DISCOVERY_NOTES = "kvm: kvm guest hung entering protected mode"
    VM_QEMU_ATTR_MAX_VCPUS = 255
    ...
    -

The attributes are defined in :mod:`condor_vmsubmit.attributes` (``NODE_ATTRIBUTES``,
``HYPERVISOR_FACTS``); the translator's Requirements name the same definitions.

A hypervisor is advertised only when it really runs a guest: libvirt must list it and answer
its domain capabilities, and ``qemu`` / ``kvm`` must boot the probe firmware of
:mod:`condor_vmsubmit.kvmprobe` under TCG / KVM.  Script-managed hypervisors are the admin's
executables in ``VMSUBMIT_SCRIPT_DIR`` whose ``discover`` action exits 0.

* :mod:`.ad` -- pure: raw answers to the ad and its cron text, and what a slow run keeps;
* :mod:`.probes` -- libvirt (a session daemon of our own as root), boot probes, NIC models, bridges;
* :mod:`.scripts` -- the admin scripts' ``discover`` action;
* :mod:`.run` -- settings, state directory and one run under one deadline (:mod:`.deadline`).

The command itself is :mod:`condor_vmsubmit.cli.discover`.
"""
