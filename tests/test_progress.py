"""Progress bars written to a log (not a terminal) update at most every LOG_INTERVAL seconds."""
import io
import sys
import time

from langskew import progress as progress_module
from langskew.progress import LOG_INTERVAL, progress, writes_to_terminal


class Terminal(io.StringIO):
    def isatty(self):
        return True


def slow_loop(stream, n=30, pause=0.02):
    """Iterate for n x pause seconds (0.6 s) with a bar writing to `stream`; return what it wrote."""
    for _ in progress(range(n), file=stream, desc="work"):
        time.sleep(pause)
    return stream.getvalue()


def test_a_bar_in_a_log_writes_its_start_and_its_end_only_within_the_interval():
    assert LOG_INTERVAL >= 5
    written = slow_loop(io.StringIO())
    # tqdm's default (0.1 s) would write about six updates in 0.6 s; here: 0/30 and 30/30
    assert written.count("/30") == 2, written
    assert "30/30" in written


def test_a_bar_on_a_terminal_keeps_tqdms_interval():
    written = slow_loop(Terminal())
    assert written.count("/30") >= 4, written


def test_stderr_decides_by_default(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not writes_to_terminal()
    assert progress(range(3)).mininterval == LOG_INTERVAL
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert writes_to_terminal()
    assert progress(range(3)).mininterval == 0.1
    assert progress(range(3), mininterval=2).mininterval == 2  # an explicit value wins


def test_every_progress_bar_of_the_package_goes_through_the_helper(root):
    """No module but langskew.progress creates a tqdm bar itself."""
    for path in (root / "src" / "langskew").rglob("*.py"):
        if path.name == "progress.py":
            continue
        text = path.read_text()
        assert "tqdm(" not in text and "tqdm.auto" not in text, path
    assert progress_module.tqdm.__module__.startswith("tqdm")
