"""The runner's signal handling: a SIGTERM or SIGINT wakes the runner where it waits, even while
libvirt's event thread runs (signals are kept to the main thread)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from condor_vmsubmit.runner.backend import Signals
from condor_vmsubmit.runner.session import start_event_loop

WAIT_SECONDS = 60.0


@pytest.mark.parametrize("sig, flag", [(signal.SIGTERM, "checkpoint"), (signal.SIGINT, "interrupt")])
def test_a_signal_wakes_the_waiting_runner(sig, flag):
    start_event_loop()  # the runner's other thread: it must not take the signal from the main thread
    signals = Signals()
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), sig)).start()
        started = time.monotonic()
        assert signals.wait(timeout=WAIT_SECONDS) is None
        assert time.monotonic() - started < WAIT_SECONDS / 2, "the wait ran to its timeout"
        assert getattr(signals, flag)
    finally:
        signals.restore()


def test_lifecycle_events_reach_the_same_wait():
    signals = Signals()
    try:
        threading.Timer(0.1, signals.wakeups.put, (("uuid", 5, 1),)).start()
        assert signals.wait(timeout=WAIT_SECONDS) == ("uuid", 5, 1)
        assert not signals.checkpoint and not signals.interrupt
    finally:
        signals.restore()
