"""What every command shares: one-line errors with distinct exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import VMSubmitError

F = TypeVar("F", bound=Callable[..., Any])


def fail(prog: str, error: VMSubmitError) -> None:
    """Print ``prog: error: FILE:LINE: message`` on stderr (after its detail lines, if any) and exit
    with the error's code."""
    for detail in error.details:
        click.echo(f"{prog}: {' '.join(detail.split())}", err=True)
    click.echo(f"{prog}: error: {error.one_line()}", err=True)
    sys.exit(error.exit_code)


def reports_errors(function: F) -> F:
    """Turn a :class:`VMSubmitError` raised by a command into one line and its exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except VMSubmitError as error:
            fail(click.get_current_context().find_root().info_name or "condor_vmsubmit", error)

    return wrapper  # type: ignore[return-value]


# HTCondor users type single-dash long options (-name, -pool, -dry-run); accept both.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help", "-help"]}
