"""What the guest uses (cpu time, memory, disk and network I/O), reported at a bounded rate."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass

import libvirt

from .. import jobcontract
from .chirp import Reporter

_STATS = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
          | libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)


@dataclass(frozen=True)
class Usage:
    """One sample, in the order of :data:`jobcontract.USAGE_ATTRS`."""

    cpu_seconds: int
    memory_bytes: int
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int

    def attributes(self) -> dict[str, int]:
        """The job attributes to set.

        >>> Usage(3, 4, 5, 6, 7, 8).attributes()["ChirpVMNetTxBytes"]
        8
        """
        return dict(zip(jobcontract.USAGE_ATTRS, astuple(self), strict=True))

    def went_back(self, earlier: Usage) -> bool:
        """Whether a counter that only grows (cpu time, bytes read, written, received, sent) is
        below ``earlier``'s: libvirt could no longer read them, the domain is going away.

        >>> Usage(5, 4, 5, 6, 7, 8).went_back(Usage(3, 9, 5, 6, 7, 8))
        False
        >>> Usage(0, 4, 5, 6, 7, 8).went_back(Usage(3, 4, 5, 6, 7, 8))
        True
        """
        counters = ("cpu_seconds", "disk_read_bytes", "disk_write_bytes", "net_rx_bytes", "net_tx_bytes")
        return any(getattr(self, name) < getattr(earlier, name) for name in counters)

    def line(self) -> str:
        """One log line.

        >>> print(Usage(3, 1048576, 0, 0, 0, 0).line())
        usage: ChirpVMCpuSeconds=3 ChirpVMMemoryBytes=1048576 ChirpVMDiskReadBytes=0
        ChirpVMDiskWriteBytes=0 ChirpVMNetRxBytes=0 ChirpVMNetTxBytes=0
        """
        return "usage: " + " ".join(f"{k}={v}" for k, v in self.attributes().items())


def from_stats(stats: dict[str, int]) -> Usage:
    """A sample from libvirt's bulk stats of one domain.

    >>> from_stats({"cpu.time": 2_500_000_000, "balloon.current": 131072, "block.count": 1,
    ...             "block.0.rd.bytes": 512, "block.0.wr.bytes": 0, "net.count": 0})
    Usage(cpu_seconds=2, memory_bytes=134217728, disk_read_bytes=512, disk_write_bytes=0,
          net_rx_bytes=0, net_tx_bytes=0)
    """
    def total(kind: str, field: str) -> int:
        return sum(int(stats.get(f"{kind}.{i}.{field}", 0)) for i in range(int(stats.get(f"{kind}.count", 0))))

    return Usage(int(stats.get("cpu.time", 0)) // 10**9, int(stats.get("balloon.current", 0)) * 1024,
                 total("block", "rd.bytes"), total("block", "wr.bytes"),
                 total("net", "rx.bytes"), total("net", "tx.bytes"))


def sample(connection: libvirt.virConnect, domain: libvirt.virDomain) -> Usage | None:
    """The domain's usage now, or None when libvirt cannot tell (it is going away)."""
    try:
        results = connection.domainListGetStats([domain], _STATS)
    except libvirt.libvirtError:
        return None
    return from_stats(results[0][1]) if results else None


class UsageReporter:
    """Reports a sample at most every ``interval`` seconds, as chirp's delayed updates (no user
    log event each time); never one whose counters went back (it would overwrite the job ad's
    last good values with those of a vanishing domain)."""

    def __init__(self, reporter: Reporter, interval: float = jobcontract.USAGE_INTERVAL_SECONDS):
        self.reporter = reporter
        self.interval = interval
        self.last_time = time.monotonic()  # the first report after one interval
        self.last: Usage | None = None
        if reporter.has_chirp and not reporter.admits_delayed(jobcontract.USAGE_ATTRS):
            reporter.say(f"this node's CHIRP_DELAYED_UPDATE_PREFIX ({reporter.delayed_prefix}) does not admit "
                         f"{jobcontract.USAGE_ATTRS[0]} ...: usage goes to stderr (docs/admin-guide.md)")

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.last_time >= self.interval

    def report(self, usage: Usage | None, now: float | None = None) -> None:
        if usage is None or (self.last is not None and usage.went_back(self.last)):
            return
        self.last_time = time.monotonic() if now is None else now
        self.last = usage
        if not self.reporter.set_attrs(usage.attributes(), delayed=True):
            self.reporter.say(usage.line())
