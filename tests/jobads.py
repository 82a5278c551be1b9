"""The job ad condor_submit would make from a translated submit description, for offline matchmaking."""

from __future__ import annotations

import classad2

from condor_vmsubmit.translate import SubmitDescription

INPUT_KIB = 1_000_000  # DiskUsage: condor_submit's sum of the input files' sizes
# What condor_submit 25.x appends to Requirements from request_memory and request_disk (seen in
# `condor_submit -dry-run`; for a 25.12+ startd the disk is its own check of the slot, modelled here
# as the clause older ones get): the description itself must not name TARGET.Memory or TARGET.Disk.
SUBMIT_ADDS = " && (TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory)"
_JOB_ATTRS = {"request_cpus": "RequestCpus", "request_memory": "RequestMemory",
              "request_disk": "RequestDisk", "requirements": "Requirements"}


def job_ad(description: SubmitDescription) -> classad2.ClassAd:
    """The job ad condor_submit makes from these commands (the parts Requirements read)."""
    lines = [f"DiskUsage = {INPUT_KIB}"]
    for key, value in description.commands:
        if key.startswith("MY."):
            lines.append(f"{key[3:]} = {value}")
        elif key == "requirements":
            lines.append(f"Requirements = ({value}){SUBMIT_ADDS}")
        elif key in _JOB_ATTRS:
            lines.append(f"{_JOB_ATTRS[key]} = {value}")
    return classad2.ClassAd("[" + "; ".join(lines) + "]")
