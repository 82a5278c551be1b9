"""OVF manifests (``.mf``): parse every spelling seen in the wild, verify while streaming.

``SHA1(f)= h`` is the DSP0243 form; ``SHA256 (f) = h``, CRLF line ends, lower-case
algorithm names and upper-case hex all occur.  Hashing uses large ``readinto`` calls
on one reused buffer, which keeps pace with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import InputError

ALGORITHMS = {"sha1": "sha1", "sha256": "sha256", "sha512": "sha512"}
CHUNK = 4 * 1024 * 1024
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
_LINE = re.compile(r"^\s*([A-Za-z0-9-]+)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)\s*$")


@dataclass(frozen=True)
class Digest:
    """One manifest line: the algorithm (hashlib name) and the expected hex digest (lower case)."""

    algorithm: str
    hexdigest: str
    line: int


def parse_manifest(text: str, path: str | Path) -> dict[str, Digest]:
    """File name -> expected digest.

    >>> m = parse_manifest("SHA1(a.ovf)= AB12\\r\\nSHA256 (b c.vmdk) = ff\\n", "x.mf")
    >>> m["a.ovf"], m["b c.vmdk"].algorithm
    (Digest(algorithm='sha1', hexdigest='ab12', line=1), 'sha256')
    """
    digests: dict[str, Digest] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise InputError(f"not a manifest line: '{line.strip()[:80]}'", path=path, line=number)
        algorithm = ALGORITHMS.get(match.group(1).lower().replace("-", ""))
        if algorithm is None:
            raise InputError(f"unsupported manifest digest '{match.group(1)}' (SHA1, SHA256 or SHA512)",
                             path=path, line=number)
        digests[match.group(2).strip()] = Digest(algorithm, match.group(3).lower(), number)
    return digests


def hash_stream(stream: BinaryIO, algorithm: str, size: int | None = None, label: str = "",
                sink: Callable[[memoryview], object] | None = None, progress: bool = False) -> str:
    """Hex digest of everything ``stream`` yields; each chunk also goes to ``sink`` (a writer).

    A rich progress bar shows on stderr for files of at least 64 MiB when ``progress``.
    """
    digest = hashlib.new(algorithm)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    show = progress and size is not None and size >= PROGRESS_MIN_BYTES
    with _progress(show) as bar:
        task = bar.add_task(label, total=size) if bar else None
        while True:
            count = stream.readinto(view)
            if not count:
                break
            chunk = view[:count]
            digest.update(chunk)
            if sink is not None:
                sink(chunk)
            if bar is not None:
                bar.advance(task, count)
    return digest.hexdigest()


def _progress(show: bool):  # type: ignore[no-untyped-def]
    if not show:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=True)


def check(name: str, expected: Digest | None, actual: str | None, manifest: str | Path,
          warnings: list[str]) -> None:
    """Raise when ``actual`` differs from the manifest; warn when the manifest omits ``name``."""
    if expected is None:
        warnings.append(f"the manifest does not list '{name}'; it is not verified")
        return
    if actual != expected.hexdigest:
        raise InputError(f"'{name}' does not match its {expected.algorithm.upper()} digest in the "
                         f"manifest (expected {expected.hexdigest}, got {actual})",
                         path=manifest, line=expected.line)
