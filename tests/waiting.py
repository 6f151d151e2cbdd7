"""A bounded wait for tests: poll a probe until its value is accepted, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(probe: Callable[[], T], accept: Callable[[T], object] = bool, *,
               timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Call ``probe`` every ``interval_s`` seconds until ``accept(value)`` holds; return that
    value.

    The probe is called at least once, and once more after the deadline, so a slow machine
    does not fail a wait whose last look would have passed.

    Raises:
        pytest.fail.Exception: ``timeout_s`` seconds passed; the message names ``what`` was
            awaited and the last value seen.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                        f"last seen: {value!r}")
        time.sleep(interval_s)
