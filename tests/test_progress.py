"""rigl_tf.progress: modes, ETA arithmetic (fake clock), the advance() hook, and an
analysis command's --progress=lines output."""

import io

import pytest

from rigl_tf import progress


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_auto_is_bar_on_a_terminal_and_quiet_otherwise(monkeypatch):
    monkeypatch.delenv("RIGL_TF_PROGRESS", raising=False)
    assert progress.resolve_mode(None, _Stream(True)) == "bar"
    assert progress.resolve_mode(None, _Stream(False)) == "off"
    monkeypatch.setenv("RIGL_TF_PROGRESS", "lines")
    assert progress.resolve_mode(None, _Stream(False)) == "lines"
    with pytest.raises(ValueError, match="progress"):
        progress.resolve_mode("loud")


def test_lines_mode_eta_from_a_fake_clock():
    clock, out = _Clock(), _Stream(False)
    p = progress.Progress(total=10, desc="work", mode="lines", stream=out, interval=10,
                          clock=clock)
    with p:
        for _ in range(4):
            clock.t += 2.0  # 2 s per unit
            progress.advance()
    lines = out.getvalue().splitlines()
    # First unit shown at once: 1 done, 2 s/it, 9 left -> ETA 18 s; then not again
    # before 10 s have passed; close() shows the final state (4 done, 6 left -> 12 s).
    assert lines[0] == "work 1/10 10% 2 s/it ETA 0:00:18 elapsed 0:00:02"
    assert lines[-1] == "work 4/10 40% 2 s/it ETA 0:00:12 elapsed 0:00:08"
    assert len(lines) == 2


def test_bar_mode_redraws_one_line_and_off_mode_is_silent():
    clock, out = _Clock(), _Stream(True)
    with progress.Progress(total=3, desc="b", mode="bar", stream=out, clock=clock):
        for _ in range(3):
            clock.t += 1.0
            progress.advance()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.startswith("\r") and "b 3/3 100%" in text
    silent = _Stream(True)
    with progress.Progress(total=3, mode="off", stream=silent):
        progress.advance(3)
    assert silent.getvalue() == ""


def test_advance_outside_a_progress_does_nothing():
    assert progress.current() is None
    progress.advance()  # no error, no output
