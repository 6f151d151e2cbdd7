"""A plain-text progress line for copies (files, bytes, bytes/s) and byte counts in decimal
units, for :func:`segctl.io.copy.stage`, the weights cache's downloads and ``segctl stage``."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


class ProgressBar:
    """A plain-text progress line on ``stream`` (stderr): files, bytes, bytes/s.

    On a terminal the line is redrawn at most every 0.2 s; elsewhere a line is printed at most
    every 5 s. ``on_bytes`` (optional) sees every increment, e.g. for tests; ``label`` starts
    the line (``stage``, ``weights``).
    """

    def __init__(self, total_files: int, total_bytes: int, stream: TextIO | None = None,
                 enabled: bool = True, on_bytes: Callable[[int], None] | None = None,
                 label: str = "stage") -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.on_bytes = on_bytes
        self.files = 0
        self.bytes = 0
        self.started = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.files += files
            now = time.perf_counter()
            due = now - self._last >= (0.2 if self._tty else 5.0)
            if self.enabled and due:
                self._last = now
                self._draw(final=False)
        if self.on_bytes is not None and nbytes:
            self.on_bytes(self.bytes)

    def close(self) -> None:
        if self.enabled:
            with self._lock:
                self._draw(final=True)

    def _draw(self, final: bool) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        line = (
            f"{self.label}: {self.files}/{self.total_files} files  "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}  "
            f"{human_bytes(self.bytes / elapsed)}/s"
        )
        end = "\n" if final or not self._tty else ""
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in decimal units: ``512 B``, ``38.9 MB``, ``4.4 GB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000.0
    return f"{nbytes:.1f} GB"
