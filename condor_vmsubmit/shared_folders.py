"""Shared folders on the submit side: ``--share DIR[:TAG][:ro]`` added to a spec.

The folder travels into the job's sandbox as input; unless read-only it comes back
as the job's output with what the guest wrote into it.  The runner mounts it into the
guest by its tag (virtiofs or 9p, see :mod:`condor_vmsubmit.domain.shares` and
docs/shared-folders.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .errors import InputError
from .spec import SharedFolder, VMSpec

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,35}")


def parse_share(text: str) -> tuple[str, str, bool]:
    """``DIR[:TAG][:ro]`` as (folder, tag, read-only); the tag defaults to the folder's name.

    >>> parse_share("results"), parse_share("/data/in:input:ro"), parse_share("out/:ro")
    (('results', 'results', False), ('/data/in', 'input', True), ('out', 'out', True))
    """
    parts = text.split(":")
    readonly = len(parts) > 1 and parts[-1] == "ro"
    if readonly:
        parts.pop()
    if len(parts) > 2 or not parts[0].strip("/"):
        raise InputError(f"--share '{text}': expected DIR[:TAG][:ro]")
    folder = parts[0].rstrip("/") or "/"
    tag = parts[1] if len(parts) == 2 else Path(folder).name
    if not _TAG.fullmatch(tag):
        raise InputError(f"--share '{text}': the tag '{tag}' must be letters, digits, '.', '_' or '-' (at most 36)")
    return folder, tag, readonly


def add_shares(spec: VMSpec, shares: Iterable[str]) -> VMSpec:
    """``spec`` with one shared folder per ``--share`` value; each folder must exist here, and
    folder names and tags must be unique (each folder lands in the sandbox under its name)."""
    added = []
    for text in shares:
        folder, tag, readonly = parse_share(text)
        if not Path(folder).is_dir():
            raise InputError("--share: not a folder", path=folder)
        added.append(SharedFolder(source=os.path.abspath(folder), target=tag, readonly=readonly))
    folders = spec.shared_folders + tuple(added)
    for what, values in (("folder name", [Path(f.source).name for f in folders]), ("tag", [f.target for f in folders])):
        repeated = {v for v in values if values.count(v) > 1}
        if repeated:
            raise InputError(f"two shared folders have the {what} '{sorted(repeated)[0]}'", path=spec.source_path)
    return replace(spec, shared_folders=folders)
