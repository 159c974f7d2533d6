"""CPU time and peak memory of a process tree, read from /proc."""

import os
import signal
import subprocess
import sys
import time

import pytest

from aligncoder_lsp.evaluation import process_stats

pytestmark = pytest.mark.skipif(not process_stats.available(), reason="needs Linux /proc")
BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_descendants_include_grandchildren_and_their_memory_is_read():
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\ntime.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code])
    found = []
    try:
        for _ in range(200):
            found = process_stats.descendants(os.getpid())
            if len(found) >= 2:
                break
            time.sleep(0.05)
        assert child.pid in found and len(found) >= 2
        assert all(process_stats.peak_rss_mib(pid) > 1 for pid in found)
    finally:
        for pid in found:
            os.kill(pid, signal.SIGKILL)
        child.wait()


def test_cpu_seconds_count_living_and_finished_children():
    before = process_stats.cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", BURN], check=True)  # finished and reaped: counted as ours
    running = subprocess.Popen([sys.executable, "-c", BURN + "\ntime.sleep(30)"])
    try:
        for _ in range(200):
            if process_stats.cpu_seconds(running.pid) >= 0.3:
                break
            time.sleep(0.05)
        assert process_stats.cpu_seconds(os.getpid()) - before >= 0.55
    finally:
        running.kill()
        running.wait()
    assert process_stats.cpu_seconds(running.pid) is None and process_stats.peak_rss_mib(running.pid) is None
