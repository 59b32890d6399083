"""Benchmarks reuse the test fixtures (small embedded world)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import small_pool, small_world  # noqa: E402,F401
