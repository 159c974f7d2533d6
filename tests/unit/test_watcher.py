"""The watcher reports what the index must look at again, ignore-rule changes included."""

import queue
import time
from pathlib import Path

from aligncoder_lsp.workspace.watcher import WorkspaceWatcher, paths_to_check


def test_an_ignore_file_change_reports_its_folder():
    assert paths_to_check(Path("/ws/pkg/.gitignore")) == {Path("/ws/pkg")}
    assert paths_to_check(Path("/ws/.git/info/exclude")) == {Path("/ws")}
    assert paths_to_check(Path("/ws/sub/repo/.git/info/exclude")) == {Path("/ws/sub/repo")}
    assert paths_to_check(Path("/ws/.git/objects/ab/cdef")) == set()
    assert paths_to_check(Path("/ws/pkg/a.py")) == {Path("/ws/pkg/a.py")}


def _wait_for(batches: queue.Queue, wanted: Path, timeout: float = 10.0) -> set[Path]:
    seen: set[Path] = set()
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted} was not reported; saw {sorted(seen)}"
        try:
            seen |= batches.get(timeout=remaining)
        except queue.Empty:
            pass
    return seen


def test_the_live_watcher_reports_rule_changes_as_folders(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / ".git" / "info").mkdir(parents=True)
    batches: queue.Queue = queue.Queue()
    watcher = WorkspaceWatcher([tmp_path], batches.put, quiet=0.05, max_wait=1.0)
    watcher.start()
    try:
        (tmp_path / "pkg" / ".gitignore").write_text("gen.py\n")
        seen = _wait_for(batches, tmp_path / "pkg")
        assert tmp_path / "pkg" / ".gitignore" not in seen
        (tmp_path / ".git" / "info" / "exclude").write_text("local.py\n")
        seen = _wait_for(batches, tmp_path)
        assert not any(".git" in path.parts for path in seen)
    finally:
        watcher.stop()
