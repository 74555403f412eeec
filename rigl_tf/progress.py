"""Progress with an ETA for long work (analysis commands, interpolation, IMP levels).

One `Progress` per task; library loops call :func:`advance` (a no-op unless a command
opened a `Progress`), so the library never prints on its own. Modes:

* ``bar``: one line redrawn in place (``\\r``) on a terminal;
* ``lines``: a plain line at most every ``interval`` seconds and at the end, for logs;
* ``off``: nothing;
* ``auto`` (default): ``bar`` when the stream is a terminal, else ``off`` (quiet in
  non-interactive logs unless asked; ``RIGL_TF_PROGRESS=lines`` or a command's
  ``--progress=lines`` asks).

Usage::

    with Progress(total=29, desc="interpolate"):
        for alpha in alphas:
            ...; advance()
"""

import contextvars
import os
import sys
import time

MODES = ("auto", "bar", "lines", "off")
_current = contextvars.ContextVar("rigl_tf_progress", default=None)


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def resolve_mode(mode=None, stream=None) -> str:
    """The effective mode: ``mode``, else ``$RIGL_TF_PROGRESS``, else 'auto' resolved."""
    mode = mode or os.environ.get("RIGL_TF_PROGRESS") or "auto"
    if mode not in MODES:
        raise ValueError(f"`progress` must be one of {', '.join(MODES)}, got {mode!r}.")
    if mode == "auto":
        stream = sys.stderr if stream is None else stream
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "off"
    return mode


class Progress:
    """Counts done units of a task of ``total`` units and shows rate and ETA.

    Args:
      total: number of units (None or 0: unknown; no percentage or ETA).
      desc: what is being done.
      mode: one of `MODES` (default: ``$RIGL_TF_PROGRESS`` or 'auto').
      stream: where to write (default: stderr).
      interval: seconds between lines in 'lines' mode (and between redraws of the bar).
      clock: a ``time.monotonic``-like function (tests).
    """

    def __init__(self, total=None, desc="", mode=None, stream=None, interval=10.0,
                 clock=time.monotonic):
        self.stream = sys.stderr if stream is None else stream
        self.mode = resolve_mode(mode, self.stream)
        self.total = int(total) if total else None
        self.desc = desc
        self.interval = float(interval) if self.mode == "lines" else min(interval, 0.2)
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last = None
        self._token = None

    def text(self) -> str:
        """The current status line, e.g. ``interpolate 10/29 34% 1.2 s/it ETA 0:00:23``."""
        elapsed = self.clock() - self.start
        parts = [self.desc] if self.desc else []
        if self.total:
            parts.append(f"{self.done}/{self.total} {100 * self.done // self.total}%")
        else:
            parts.append(str(self.done))
        if self.done:
            rate = elapsed / self.done
            parts.append(f"{rate:.3g} s/it")
            if self.total and self.done < self.total:
                parts.append(f"ETA {_clock(rate * (self.total - self.done))}")
        parts.append(f"elapsed {_clock(elapsed)}")
        return " ".join(parts)

    def update(self, n=1):
        """Marks ``n`` more units done and shows the status when due."""
        self.done += n
        now = self.clock()
        finished = self.total is not None and self.done >= self.total
        if self.mode == "off":
            return
        if finished or self._last is None or now - self._last >= self.interval:
            self._last = now
            self._show()

    def _show(self, end=""):
        if self.mode == "bar":
            self.stream.write("\r" + self.text() + "\033[K" + end)
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def close(self):
        """Ends the task (the bar gets its final state and a newline)."""
        if self.mode == "bar":
            self._show(end="\n")
        elif self.mode == "lines" and self._last != self.clock():
            self._show()

    def __enter__(self):
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc):
        _current.reset(self._token)
        self.close()
        return False


def advance(n=1):
    """Advances the innermost open `Progress` of this context, if any (else nothing)."""
    progress = _current.get()
    if progress is not None:
        progress.update(n)


def fit_verbosity(progress: str, stream=None) -> int:
    """``model.fit`` verbosity for a command's ``--progress``: 1 (bar), 2 (lines), 0 (off).

    The trainer's epochs are ``training.log_freq`` steps long, so 'lines' prints one line
    per ``log_freq`` steps; 'auto' is 'bar' when ``stream`` (stdout) is a terminal, else
    'lines' (a training command always reports, unlike a library loop).
    """
    if progress not in MODES:
        raise ValueError(f"`--progress` must be one of {', '.join(MODES)}, got {progress!r}.")
    if progress == "auto":
        stream = sys.stdout if stream is None else stream
        progress = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return {"bar": 1, "lines": 2, "off": 0}[progress]


def command_mode(progress: str, stream=None) -> str:
    """A command's ``--progress`` for its own `Progress` lines: 'auto' is 'bar' on a
    terminal, else 'lines' (like :func:`fit_verbosity`)."""
    if progress == "auto":
        stream = sys.stderr if stream is None else stream
        return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return resolve_mode(progress, stream)


def current():
    """The innermost open `Progress`, or None (a hook for long library loops, e.g. IMP)."""
    return _current.get()
