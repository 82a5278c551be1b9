"""One deadline for the whole discovery, and calls that may hang (a stuck libvirtd) run beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """Seconds left until a fixed moment."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def in_thread(function: Callable[[], T]) -> Callable[[float], tuple[bool, T | BaseException | None]]:
    """Start ``function`` in a daemon thread; the returned waiter gives ``(finished, result)``.

    A call stuck in C (a hung libvirtd) cannot be interrupted; the daemon thread is simply
    abandoned when the program exits.
    """
    box: list[T | BaseException] = []

    def run() -> None:
        try:
            box.append(function())
        except BaseException as error:  # handed to the waiter
            box.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait(timeout: float) -> tuple[bool, T | BaseException | None]:
        thread.join(timeout)
        return (True, box[0]) if box else (False, None)

    return wait
