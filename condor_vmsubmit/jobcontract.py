"""The contract between the submit side (translator) and the execute side (runner).

Both sides import these names; change them in one place only.  docs/ explains
each one for users and admins.
"""

from __future__ import annotations

import math

from .attributes import JOB_CAPTURE_SCREEN

# The normalized spec travels with the job under this name in the sandbox.
SPEC_FILE = "vmspec.json"
# A libvirt-sourced job also carries the user's domain XML, replayed as faithfully as safety allows.
DOMAIN_XML_FILE = "domain.xml"
# Saved guest state lives here; HTCondor keeps it with every checkpoint and eviction (transfer_checkpoint_files,
# transfer_output_files with when_to_transfer_output = ON_EXIT_OR_EVICT).
CHECKPOINT_DIR = "vm-checkpoint"

# The runner's documented path on execute nodes (the VMSUBMIT_RUNNER knob overrides it).
DEFAULT_RUNNER = "/usr/local/bin/condor_vm_runner"

# Disk formats QEMU cannot save (migrate) a guest with, and what the runner converts them into in the
# sandbox, under the same name, before the guest first starts (runner/savable.py).
UNSAVABLE_FORMATS = frozenset({"vmdk", "vdi", "vhdx", "vpc"})
SAVABLE_FORMAT = "qcow2"

# Runner exit codes.  A guest's own exit status 0..GUEST_STATUS_MAX passes through unchanged;
# the codes above it are the runner's own.
GUEST_STATUS_MAX = 84
EXIT_CHECKPOINTED = 85          # guest state saved into CHECKPOINT_DIR (SIGTERM, or periodic): checkpoint_exit_code
EXIT_REFUSED = 110              # safety rules or admin policy refused the VM (job held)
EXIT_MISMATCH = 111             # post-match verification failed: this slot cannot run it (job held)
EXIT_START_FAILED = 112         # the hypervisor failed to start the guest (job held)
EXIT_GUEST_CRASHED = 113        # the guest crashed or was destroyed (job held)
EXIT_NOTHING_TO_BOOT = 114      # the firmware found nothing to boot (job held)
EXIT_CHECKPOINT_FAILED = 115    # SIGTERM asked for a checkpoint and the guest's state could not be saved (job held)
HOLD_EXIT_CODES = (EXIT_REFUSED, EXIT_MISMATCH, EXIT_START_FAILED, EXIT_GUEST_CRASHED, EXIT_NOTHING_TO_BOOT,
                   EXIT_CHECKPOINT_FAILED)
EXIT_INTERRUPTED = 130          # SIGINT (Ctrl-C of --local, condor_vm_control stop --force): the guest was destroyed

# Periodic checkpoints (docs/runner.md, "Checkpoints"): the job attribute giving the seconds between
# two (0: none) and its default; the node bounds it (checks/knobs.py, *_CHECKPOINT_INTERVAL).
CHECKPOINT_INTERVAL_ATTR = "VMCheckpointInterval"
DEFAULT_CHECKPOINT_INTERVAL_SECONDS = 3600

# Job attribute the runner sets through chirp before a hold exit; on_exit_hold_reason reads it.
HOLD_REASON_ATTR = "VMHoldReason"
# Job attributes the runner updates while the guest runs (usage reporting).  They are chirp's
# delayed updates (batched into the starter's periodic update, no event in the user log), which
# the starter accepts only for names its CHIRP_DELAYED_UPDATE_PREFIX admits: "Chirp*" by default.
# Earlier builds named them without "Chirp" (VMCpuSeconds ... VMNetTxBytes): docs/attributes.md.
USAGE_ATTRS = ("ChirpVMCpuSeconds", "ChirpVMMemoryBytes", "ChirpVMDiskReadBytes", "ChirpVMDiskWriteBytes",
               "ChirpVMNetRxBytes", "ChirpVMNetTxBytes")
USAGE_INTERVAL_SECONDS = 60.0   # between two updates of them, unless the runner is told otherwise
# Job attribute naming what the admin policy changed (empty when nothing).
POLICY_CHANGES_ATTR = "VMPolicyChanges"

# Memory QEMU needs beyond the guest's RAM, added to request_memory (cgroup limits kill QEMU).
QEMU_OVERHEAD_BYTES = 256 * 1024 * 1024
QEMU_OVERHEAD_FRACTION = 0.10   # plus this share of guest memory, for page tables and device buffers

# The guest's serial console, written by the runner into the sandbox (transferred back with the output).
CONSOLE_LOG_FILE = "vm-console.log"
# The guest's screen: its last screen when it ends unasked, and the frames and video of --capture-screen
# (runner/screen.py), written by the runner into this folder of the sandbox and transferred back.
SCREEN_DIR = "vm-screen"
# Job attribute (set by --capture-screen): seconds between two frames of the guest's screen.
CAPTURE_SCREEN_ATTR = JOB_CAPTURE_SCREEN
# A guest reports its exit status by printing this marker and a number on its serial console
# before it powers off (docs/runner.md); the runner passes the number through as its exit code.
GUEST_EXIT_MARKER = "condor-vm-exit-status="


def request_memory_mib(memory_bytes: int) -> int:
    """Guest memory plus QEMU's overhead (jobcontract), in whole MiB.

    >>> request_memory_mib(1024 * 2**20)
    1383
    """
    total = (memory_bytes + QEMU_OVERHEAD_BYTES
             + memory_bytes * QEMU_OVERHEAD_FRACTION)
    return math.ceil(total / 2**20)
