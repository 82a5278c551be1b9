"""The HTCondor configuration, the one place it is read (``htcondor2.param``), and where from.

A command a user or an admin runs (the frontends, discovery under the startd) reads the
configuration HTCondor's own tools would: ``$CONDOR_CONFIG``, else the first of
/etc/condor/condor_config, /usr/local/etc/condor_config and ~condor/condor_config
(``find_global`` in HTCondor's condor_config.cpp).

The runner, inside a job, cannot go by that: the starter gives a job no ``CONDOR_CONFIG``, a
node installed elsewhere (a tarball, a pilot) has nothing at the default places, and the
job's environment is its submitter's to set (``_CONDOR_<KNOB>`` overrides any knob).  So
discovery, which the startd runs with the daemons' own environment, advertises the file it
read (``VM_CONDOR_CONFIG``) and a digest of every ``VMSUBMIT_*`` knob as it saw them
(``VM_CONFIG_DIGEST``); the runner reads that file and starts nothing unless it sees the
same knobs (:func:`use_node_config`).

Imported lazily by callers so that commands which need no configuration (a dry run) do not load
the bindings.
"""

from __future__ import annotations

import hashlib
import os
import pwd
from collections.abc import Iterable, Mapping

from .attributes import VM_CONDOR_CONFIG, VM_CONFIG_DIGEST
from .errors import UnverifiedConfigError

# Where HTCondor looks for its root configuration when $CONDOR_CONFIG is not set (in order),
# before ~condor/condor_config.
SEARCHED = ("/etc/condor/condor_config", "/usr/local/etc/condor_config")
KNOB_PREFIX = "VMSUBMIT_"
# Machine attributes discovery writes and the runner checks.
CONFIG_ATTR = VM_CONDOR_CONFIG.name
DIGEST_ATTR = VM_CONFIG_DIGEST.name


def knob(name: str) -> str | None:
    """The value of knob ``name``, stripped; None when unset, empty, or without the bindings."""
    try:
        import htcondor2
    except ImportError:
        return None
    value = htcondor2.param.get(name)
    return value.strip() if value and value.strip() else None


def knobs(names: Iterable[str]) -> dict[str, str]:
    """The knobs of ``names`` that are set, with their values."""
    return {name: value for name in names if (value := knob(name)) is not None}


def vmsubmit_knobs() -> dict[str, str]:
    """Every ``VMSUBMIT_*`` knob that is set, with its value (stripped)."""
    try:
        import htcondor2
    except ImportError:
        return {}
    return knobs(sorted(name for name in htcondor2.param.keys() if name.upper().startswith(KNOB_PREFIX)))


def digest(values: Mapping[str, str]) -> str:
    """A short digest of knob values (names in any case, order irrelevant).

    >>> digest({"VMSUBMIT_MAX_VCPUS": "8"}) == digest({"vmsubmit_max_vcpus": "8"}) != digest({})
    True
    """
    text = "".join(f"{name.upper()}={value}\n" for name, value in sorted((k.upper(), v) for k, v in values.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def searched_locations() -> list[str]:
    """The files HTCondor's tools try when ``$CONDOR_CONFIG`` is not set, in order."""
    try:
        home = pwd.getpwnam("condor").pw_dir
    except KeyError:
        return list(SEARCHED)
    return [*SEARCHED, os.path.join(home, "condor_config")]


def config_source(environ: Mapping[str, str]) -> str | None:
    """The root configuration HTCondor's tools read with ``environ``: ``$CONDOR_CONFIG``, else
    the first readable file of :func:`searched_locations`; None when there is none (the
    bindings set ``CONDOR_CONFIG=/dev/null`` then)."""
    named = environ.get("CONDOR_CONFIG")
    if named:
        return None if named == os.devnull else named
    return next((path for path in searched_locations() if os.access(path, os.R_OK)), None)


def use_node_config(machine_ad: Mapping[str, object]) -> str:
    """Read, from now on, the configuration this node's daemons use, as discovery advertised it
    in ``machine_ad``; its path.

    Raises :class:`UnverifiedConfigError` when the runner cannot be sure that it sees the admin's
    ``VMSUBMIT_*`` knobs as the node does: no advertised file, a file it cannot read, or other
    values (the job's environment overrides one, or the configuration changed since discovery).
    """
    path, expected = machine_ad.get(CONFIG_ATTR), machine_ad.get(DIGEST_ATTR)
    if not isinstance(path, str) or not isinstance(expected, str):
        raise UnverifiedConfigError(f"the machine ad does not say which HTCondor configuration this node uses "
                          f"({CONFIG_ATTR}, {DIGEST_ATTR}: advertised by condor_vm_discover as a startd cron "
                          "job, docs/admin-guide.md); not running the VM without the admin's policy")
    if not os.access(path, os.R_OK):
        raise UnverifiedConfigError(f"cannot read this node's HTCondor configuration {path} (named by {CONFIG_ATTR}) "
                          "as the job's user; not running the VM without the admin's policy")
    os.environ["CONDOR_CONFIG"] = path
    import htcondor2

    htcondor2.reload_config()
    seen = vmsubmit_knobs()
    if digest(seen) != expected:
        overridden = sorted(name for name in os.environ if name.upper().startswith("_CONDOR_" + KNOB_PREFIX))
        why = (f"the job's environment overrides {', '.join(overridden)}" if overridden else
               "the configuration changed since discovery last ran (release the job after its next run), "
               "or the daemons' environment sets VMSUBMIT_* knobs a job does not see")
        raise UnverifiedConfigError(f"the VMSUBMIT_* knobs the runner reads from {path} differ from those this node's "
                          f"discovery saw ({DIGEST_ATTR}): {why}; not running the VM unchecked")
    return path
