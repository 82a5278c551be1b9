"""The thin edge to the starter's chirp server (``htcondor2.htchirp``).

When the job has no chirp (no ``$_CONDOR_CHIRP_CONFIG``: ``want_io_proxy`` unset, or a
``--local`` run) everything goes to the runner's stderr, which is the job's error file.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..classads import classad_string


class Reporter:
    """Job attributes and log lines, through chirp when the starter offers it."""

    def __init__(self, environ: dict[str, str] | None = None, stream: TextIO | None = None):
        environ = dict(os.environ) if environ is None else environ
        config = environ.get("_CONDOR_CHIRP_CONFIG")
        self.chirp_config = config if config and os.path.exists(config) else None
        self.stream = stream or sys.stderr

    @property
    def has_chirp(self) -> bool:
        return self.chirp_config is not None

    def _chirp(self, action: str, *args: str) -> bool:
        if self.chirp_config is None:
            return False
        from htcondor2.htchirp import HTChirp

        previous = os.environ.get("_CONDOR_CHIRP_CONFIG")
        os.environ["_CONDOR_CHIRP_CONFIG"] = self.chirp_config
        try:
            with HTChirp() as chirp:
                getattr(chirp, action)(*args)
            return True
        except (OSError, ValueError, HTChirp.ChirpError) as exc:  # a broken chirp must not kill the guest
            self.say(f"chirp {action} failed: {exc}")
            return False
        finally:
            if previous is None:
                os.environ.pop("_CONDOR_CHIRP_CONFIG", None)

    def set_attrs(self, attrs: dict[str, int | str]) -> bool:
        """Set job attributes (strings quoted, numbers as they are); False without chirp."""
        if self.chirp_config is None:
            return False
        ok = True
        for name, value in attrs.items():
            expression = classad_string(value) if isinstance(value, str) else str(value)
            ok = self._chirp("set_job_attr", name, expression) and ok
        return ok

    def log(self, text: str) -> None:
        """A line in the job's user log through chirp, and always on stderr."""
        self._chirp("ulog", text)
        self.say(text)

    def say(self, text: str) -> None:
        print(f"condor_vm_runner: {text}", file=self.stream, flush=True)
