"""The htcondor2 edge: read the runner knob, find the schedd, submit, spool.

Only real submissions import this module (a dry run never loads htcondor2).  Every
failure becomes one :class:`~condor_vmsubmit.errors.SubmitError` line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import htcondor2

from . import jobcontract
from .checks import knobs
from .errors import SubmitError


@dataclass(frozen=True)
class Submitted:
    """What the schedd accepted: the cluster, how many jobs, and its warnings."""

    cluster: int
    count: int
    warnings: tuple[str, ...] = ()


def configured_runner() -> str:
    """The runner path from the ``VMSUBMIT_RUNNER`` knob, else the documented default."""
    return knobs.configured(knobs.RUNNER) or jobcontract.DEFAULT_RUNNER


def find_schedd(name: str | None = None, pool: str | None = None) -> htcondor2.Schedd:
    """The schedd ``name`` in ``pool`` (the local schedd and pool when not given)."""
    where = (f"schedd '{name}'" if name else "the schedd") + (f" in pool {pool}" if pool else "")
    try:
        if name is None and pool is None:
            return htcondor2.Schedd()
        collector = htcondor2.Collector(pool) if pool else htcondor2.Collector()
        location = collector.locate(htcondor2.DaemonType.Schedd, name)
    except (htcondor2.HTCondorException, ValueError, RuntimeError) as error:
        raise SubmitError(f"cannot reach {where}: {_reason(error)}") from None
    if location is None:
        raise SubmitError(f"cannot find {where}: the collector does not know it")
    return htcondor2.Schedd(location)


def submit(text: str, *, count: int = 1, spool: bool = False,
           name: str | None = None, pool: str | None = None) -> Submitted:
    """Submit the description ``text`` as ``count`` jobs in one transaction."""
    schedd = find_schedd(name, pool)
    try:
        description = htcondor2.Submit(text)
    except (htcondor2.HTCondorException, ValueError) as error:
        raise SubmitError(f"the submit description does not parse: {_reason(error)}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = schedd.submit(description, count=count, spool=spool)
            if spool:
                schedd.spool(result)
        except (htcondor2.HTCondorException, ValueError, RuntimeError) as error:
            raise SubmitError(f"submission to the schedd failed: {_reason(error)}") from None
    return Submitted(cluster=result.cluster(), count=result.num_procs(),
                     warnings=tuple(" ".join(str(w.message).split()) for w in caught))


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
