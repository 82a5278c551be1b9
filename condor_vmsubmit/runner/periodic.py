"""How often the runner saves the guest on its own: periodic checkpoints (docs/runner.md, "Checkpoints").

HTCondor uploads a job's checkpoint files only when the job exits with its ``checkpoint_exit_code``
on its own, and then restarts it in place.  So every ``VMCheckpointInterval`` seconds the runner
saves the guest and exits 85; the next start restores it.  That saved state is what a job goes on
from after its node vanished (a SIGKILL of the runner, a power failure).
"""

from __future__ import annotations

from collections.abc import Mapping

import classad2

from .. import jobcontract
from ..checks import knobs


def checkpoint_interval(job_ad: classad2.ClassAd, params: Mapping[str, str]) -> float | None:
    """Seconds between two periodic checkpoints, or None for none.

    The job's ``VMCheckpointInterval`` (0: none), raised to the node's
    ``VMSUBMIT_MIN_CHECKPOINT_INTERVAL`` (default 60) and lowered to its
    ``VMSUBMIT_MAX_CHECKPOINT_INTERVAL`` (unset or 0: no upper bound; set, it applies to jobs that
    asked for none as well); ``params`` holds the knobs' texts.

    >>> ad = classad2.ClassAd({"VMCheckpointInterval": 20})
    >>> checkpoint_interval(ad, {}), checkpoint_interval(ad, {"VMSUBMIT_MIN_CHECKPOINT_INTERVAL": "10"})
    (60.0, 20.0)
    >>> none = classad2.ClassAd({"VMCheckpointInterval": 0})
    >>> checkpoint_interval(none, {}), checkpoint_interval(none, {"VMSUBMIT_MAX_CHECKPOINT_INTERVAL": "900"})
    (None, 900.0)
    """
    low = knobs.MIN_CHECKPOINT_INTERVAL.value(params)
    high = knobs.MAX_CHECKPOINT_INTERVAL.value(params) or None
    asked = job_ad.get(jobcontract.CHECKPOINT_INTERVAL_ATTR)
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or asked <= 0:
        return high
    seconds = min(float(asked), high) if high else float(asked)
    return max(seconds, low)
