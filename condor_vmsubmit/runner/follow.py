"""Following a file that grows (the guest's console log): what is appended goes to a sink.

The runner copies the console into the job's standard output with it (``condor_tail`` and
the ``output`` file show the guest as it runs), and ``--local`` prints it on the terminal.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

POLL_SECONDS = 0.1


class Follower:
    """Hands every byte appended to ``path`` after ``offset`` to ``sink``, from a thread, until
    the ``with`` block ends (then once more, so nothing written before is missed).

    A file that shrinks (truncated for a fresh boot) is followed again from its start.
    ``tick`` is called after every look at the file.
    """

    def __init__(self, path: Path, sink: Callable[[bytes], None], *, offset: int = 0,
                 tick: Callable[[], None] | None = None, poll: float = POLL_SECONDS):
        self.path, self.sink, self.offset, self.tick, self.poll = path, sink, offset, tick, poll
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._follow, name=f"follow {path.name}", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _follow(self) -> None:
        while True:
            finished = self.done.is_set()
            self.read()
            if self.tick is not None:
                self.tick()
            if finished:
                return
            self.done.wait(self.poll)

    def read(self) -> None:
        """Pass on what was appended since the last look."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return  # not there yet
        if size < self.offset:
            self.offset = 0
        if size == self.offset:
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        self.offset += len(data)
        self.sink(data)


def size_of(path: Path) -> int:
    """The size of ``path`` now, 0 when it does not exist (where following starts)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def write_to_stdout(data: bytes) -> None:
    """Write ``data`` to file descriptor 1 (the job's output file), past Python's buffers."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(1, view):]
        except OSError:
            return  # no standard output to write to: the console log still has it all
