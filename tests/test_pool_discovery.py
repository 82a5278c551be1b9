"""Against a real pool: what ``condor_vm_discover``, run by the startd as a STARTD_CRON job,
advertises reaches the startd ads the negotiator matches against.

Needs ``CONDOR_CONFIG`` naming a pool whose ``condor_q`` answers and execute nodes set up as
docs/admin-guide.md says; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import classad2
from pool import NEEDS_POOL

from condor_vmsubmit.config import digest

pytestmark = NEEDS_POOL


def vm_startds() -> list:
    import htcondor2

    return htcondor2.Collector().query(
        htcondor2.AdType.Startd, constraint="VM_RUNNER_VERSION =!= undefined",
        projection=["Name", "VM_TYPES", "VM_HYPERVISORS", "VM_RUNNER_VERSION", "VM_DISCOVERY_ERROR",
                    "VM_DISCOVERY_NOTES", "VM_CONDOR_CONFIG", "VM_CONFIG_DIGEST", "VM_DISCOVERY_AGE"])


def test_the_cron_attributes_are_in_the_startd_ads() -> None:
    ads = vm_startds()
    assert ads, "no startd advertises VM_RUNNER_VERSION: is 50-vmsubmit-execute.conf installed?"
    for ad in ads:
        assert isinstance(ad["VM_TYPES"], str) and isinstance(ad["VM_HYPERVISORS"], str), ad["Name"]
        assert isinstance(ad["VM_DISCOVERY_AGE"], int), ad["Name"]
        if "libvirt-managed" in ad["VM_TYPES"].split(","):
            assert ad.get("VM_DISCOVERY_ERROR") in (None, classad2.Value.Undefined), ad["Name"]
            assert "qemu" in ad["VM_HYPERVISORS"].split(","), ad["Name"]


def test_the_node_advertises_the_configuration_its_daemons_read() -> None:
    """The runner reads the file named in VM_CONDOR_CONFIG and compares its knobs with
    VM_CONFIG_DIGEST (docs/admin-guide.md): on this machine that is the pool's own configuration,
    wherever it was installed, with the VMSUBMIT_* knobs as the tools read them."""
    import htcondor2

    ours = Path(os.environ["CONDOR_CONFIG"]).resolve()
    knobs = {name: htcondor2.param[name] for name in htcondor2.param.keys() if name.upper().startswith("VMSUBMIT_")}
    for ad in vm_startds():
        assert Path(ad["VM_CONDOR_CONFIG"]).resolve() == ours, ad["Name"]
        assert ad["VM_CONFIG_DIGEST"] == digest({k: v.strip() for k, v in knobs.items()}), ad["Name"]
