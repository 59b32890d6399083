"""Write the schema-faithful fixtures of the real benchmarks' data sets (selbench.evaluators.task_fixtures).

Usage: ``python tools/make_task_fixtures.py OUT`` — then ``evaluation.task_data: OUT`` (or
``LmmsEvalSession(..., task_data=OUT)``) runs lmms-eval's own tasks on them, offline. Seconds; no downloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selbench.evaluators.task_fixtures import FIXTURES, write_fixtures

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = write_fixtures(Path(sys.argv[1]))
    for f in FIXTURES:
        print(f"{out / f.repo}  {f.config}: {', '.join(f.splits)}")
