"""How many cores other processes leave free, for llama.cpp's thread count.

llama.cpp's threads wait for each other at every layer: with one thread per core and one of
the cores busy with anything else (another llama.cpp, a build, the retriever's worker), the
prompt is evaluated many times slower than on one thread (2 cores: 1.9× faster with two
threads when idle, 13–16× slower with another llama.cpp process busy). So with
``model.nThreads = 0`` each prompt gets as many threads as there are cores others left free,
measured over the last half second from ``/proc/stat`` less this process's own CPU time.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.5
"""How often the use of the cores is sampled."""
SPARE = 0.25
"""Of a core others use at most this share, it still counts as free."""


def usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class CoreMeter:
    """Free cores over the last :data:`SAMPLE_SECONDS`, sampled on a daemon thread; where
    ``/proc`` cannot be read, every core counts as free."""

    def __init__(self) -> None:
        self.cores = usable_cores()
        self._free = float(self.cores)
        threading.Thread(target=self._sample, name="core-meter", daemon=True).start()

    def threads(self) -> int:
        """Threads for the next prompt: the free cores, at least one."""
        return max(1, min(self.cores, math.floor(self._free + SPARE)))

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            previous = _busy_seconds(ticks), time.monotonic()
        except (OSError, ValueError, IndexError) as error:
            logger.info("cannot read the cores' use (%s): llama.cpp uses every core", error)
            return
        while True:
            time.sleep(SAMPLE_SECONDS)
            try:
                now = _busy_seconds(ticks), time.monotonic()
            except (OSError, ValueError, IndexError):
                continue
            (busy, own), at = now
            (busy_before, own_before), before = previous
            others = (busy - busy_before) - (own - own_before)
            self._free = self.cores - max(0.0, others) / max(at - before, 1e-3)
            previous = now


def _busy_seconds(ticks: int) -> tuple[float, float]:
    """CPU seconds all processes and this process have used so far."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    busy = user + nice + system + irq + softirq + steal  # guest time is part of user and nice
    with open("/proc/self/stat") as own:
        values = own.read().rsplit(")", 1)[1].split()
    return busy / ticks, (int(values[11]) + int(values[12])) / ticks  # utime, stime
