"""CPU time and peak memory of a process and its descendants, read from Linux's /proc.

Processes may end while they are read: those are skipped. Where /proc is missing every
figure is None, so a report says "not measured" rather than failing.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def available() -> bool:
    return (PROC / "self" / "stat").is_file()


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid`` that are alive now."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list((PROC / str(parent) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid``, its reaped children and its living descendants."""
    if not available():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for index, process in enumerate([pid, *descendants(pid)]):
        try:
            stat = (PROC / str(process) / "stat").read_text()
        except OSError:
            if index == 0:
                return None
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def peak_rss_mib(pid: int) -> float | None:
    """The process's high-water mark of resident memory (VmHWM)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
