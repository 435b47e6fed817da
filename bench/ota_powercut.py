"""2,000 power cuts during a firmware update (issue #22): tests/ota_support.py's run, at ten
times the test's cut points. Prints `cuts=2000 bricked=0 lost=0 unfinished=0` when the device
always boots a signed image, keeps every journaled event and ends on the new firmware.

    .venv/bin/python bench/ota_powercut.py               # 2,000 cuts
    .venv/bin/python bench/ota_powercut.py --cuts 500 --size 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ota_support import run_ota_cuts  # type: ignore[import-not-found]  # noqa: E402

from kvitto.paths import micropython_binary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cuts", type=int, default=2000)
    parser.add_argument("--size", type=int, default=40_000, help="image bytes")
    args = parser.parse_args()
    slot = max(65_536, (args.size + 4095) // 4096 * 4096)
    with tempfile.TemporaryDirectory(prefix="kvitto-ota-cuts-") as workdir:
        started = time.perf_counter()
        result = run_ota_cuts(micropython_binary(), args.cuts, Path(workdir), args.size, slot,
                              timeout=7200)  # fmt: skip
        elapsed = time.perf_counter() - started
    for problem in result.problems[:20]:
        print(problem)
    print(f"image={args.size} bytes programmed per update={result.clean_bytes} "
          f"{elapsed:.0f}s")  # fmt: skip
    print(result.line)


if __name__ == "__main__":
    main()
