"""The thin edge to the starter's chirp server (``htcondor2.htchirp``).

When the job has no chirp (no ``$_CONDOR_CHIRP_CONFIG``: ``want_io_proxy`` unset, or a
``--local`` run) everything goes to the runner's stderr, which is the job's error file.

Attributes that change often (usage) go as chirp's *delayed* updates: the starter keeps them and
sends them with its periodic update, and no event is written into the user's job log.  It takes
only names that its ``CHIRP_DELAYED_UPDATE_PREFIX`` admits (passed to the job as
``$_CHIRP_DELAYED_UPDATE_PREFIX``; ``Chirp*`` by default).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TextIO

from ..classads import classad_string


class Reporter:
    """Job attributes and log lines, through chirp when the starter offers it."""

    def __init__(self, environ: dict[str, str] | None = None, stream: TextIO | None = None):
        environ = dict(os.environ) if environ is None else environ
        config = environ.get("_CONDOR_CHIRP_CONFIG")
        self.chirp_config = config if config and os.path.exists(config) else None
        self.delayed_prefix = environ.get("_CHIRP_DELAYED_UPDATE_PREFIX", DEFAULT_DELAYED_PREFIX)
        self.stream = stream or sys.stderr

    @property
    def has_chirp(self) -> bool:
        return self.chirp_config is not None

    def _chirp(self, calls: list[tuple[str, tuple[str, ...]]]) -> bool:
        """Make the chirp ``calls`` (method name, arguments) through one connection."""
        if self.chirp_config is None:
            return False
        from htcondor2.htchirp import HTChirp

        previous = os.environ.get("_CONDOR_CHIRP_CONFIG")
        os.environ["_CONDOR_CHIRP_CONFIG"] = self.chirp_config
        action = calls[0][0] if calls else ""
        try:
            with HTChirp() as chirp:
                for action, args in calls:
                    getattr(chirp, action)(*args)
            return True
        except (OSError, ValueError, HTChirp.ChirpError) as exc:  # a broken chirp must not kill the guest
            self.say(f"chirp {action} failed: {exc}")
            return False
        finally:
            if previous is None:
                os.environ.pop("_CONDOR_CHIRP_CONFIG", None)

    def admits_delayed(self, names: Iterable[str]) -> bool:
        """Whether the starter takes delayed updates of all ``names``."""
        return all(prefix_admits(self.delayed_prefix, name) for name in names)

    def set_attrs(self, attrs: dict[str, int | str], *, delayed: bool = False) -> bool:
        """Set job attributes (strings quoted, numbers as they are) through one chirp connection;
        False without chirp.

        ``delayed``: as chirp's delayed updates; False (nothing sent) unless the starter's
        prefix admits every name.
        """
        if self.chirp_config is None or (delayed and not self.admits_delayed(attrs)):
            return False
        action = "set_job_attr_delayed" if delayed else "set_job_attr"
        return self._chirp([(action, (name, classad_string(value) if isinstance(value, str) else str(value)))
                            for name, value in attrs.items()])

    def log(self, text: str) -> None:
        """A line in the job's user log through chirp, and always on stderr."""
        self._chirp([("ulog", (text,))])
        self.say(text)

    def say(self, text: str) -> None:
        print(f"condor_vm_runner: {text}", file=self.stream, flush=True)


DEFAULT_DELAYED_PREFIX = "Chirp*"  # HTCondor's default CHIRP_DELAYED_UPDATE_PREFIX


def prefix_admits(patterns: str, name: str) -> bool:
    """Whether a CHIRP_DELAYED_UPDATE_PREFIX list admits ``name`` as HTCondor checks it
    (``contains_anycase_withwildcard``: any case, at most one ``*`` per pattern).

    >>> [prefix_admits("Chirp*", n) for n in ("ChirpVMCpuSeconds", "chirpx", "VMCpuSeconds")]
    [True, True, False]
    >>> prefix_admits("Foo, VM*Bytes", "vmnetrxbytes"), prefix_admits("Foo*", "Fo")
    (True, False)
    """
    folded = name.lower()
    for pattern in re.split(r"[\s,]+", patterns.lower()):
        head, star, tail = pattern.partition("*")
        if not pattern:
            continue
        if not star and folded == pattern:
            return True
        if star and len(folded) >= len(head) + len(tail) and folded.startswith(head) and folded.endswith(tail):
            return True
    return False
