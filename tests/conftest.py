"""Shared pytest fixtures.

Real sample files live in ``../shared/data/real`` beside the checkout (see that folder's
README). Tests that need them take the ``real_data`` fixture, which skips with a clear reason
only where that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path of ``../shared/data/real``; skips the test where the folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sample data not found at {REAL_DATA} (expected beside the checkout)")
    return REAL_DATA
