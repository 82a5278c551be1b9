"""The HTCondor configuration, the one place it is read (``htcondor2.param``).

Imported lazily by callers so that commands which need no configuration (a dry run) do not load
the bindings.
"""

from __future__ import annotations

from collections.abc import Iterable


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
