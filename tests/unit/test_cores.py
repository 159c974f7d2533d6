"""The free-core count that sets llama.cpp's threads when model.nThreads is 0."""

import subprocess
import sys
import time

from aligncoder_lsp.models import cores
from aligncoder_lsp.models.cores import SAMPLE_SECONDS, CoreMeter, usable_cores

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


def test_cores_busy_with_other_processes_are_not_counted():
    meter = CoreMeter()
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(usable_cores())]
    try:
        time.sleep(SAMPLE_SECONDS * 3)
        assert meter.threads() == 1
    finally:
        for spinner in spinners:
            spinner.kill()


def test_without_proc_every_core_counts(monkeypatch):
    def unreadable(ticks):
        raise OSError("no /proc here")

    monkeypatch.setattr(cores, "_busy_seconds", unreadable)
    meter = CoreMeter()
    time.sleep(SAMPLE_SECONDS * 2)
    assert meter.threads() == usable_cores()
