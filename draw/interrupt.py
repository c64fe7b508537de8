"""Stopping long work cleanly on SIGTERM or Ctrl-C.

Training and the importance-sampled evaluation run for hours on a CPU, in pieces that are
killed and rerun. Inside :class:`StopOnSignal`, SIGTERM or a first SIGINT only sets a
flag; the loop finishes the unit of work in flight (a training step, a chunk of images),
saves it, and raises :class:`Interrupted`, so that rerunning the same command loses
nothing. A second SIGINT interrupts at once.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the work after saving it: rerunning the same command
    continues where it stopped. ``signum`` is the signal (the CLI exits with 128 + it)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopOnSignal:
    """A context in which SIGTERM and SIGINT set ``signum`` instead of killing the process;
    the previous handlers come back on exit. Installed only when ``enabled`` and in the
    main thread (under torchrun the ranks would not agree on where to stop)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def name(self) -> str:
        """The signal received, e.g. ``"SIGTERM"`` ("" when none)."""
        return "" if self.signum is None else signal.Signals(self.signum).name

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopOnSignal:
        if self.enabled:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
