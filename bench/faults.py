"""Fault scenarios at scale: the real firmware on the unix port, a real Mosquitto, the real collector.

    .venv/bin/python bench/faults.py                       # 100 kills, 100 cuts, 1000 power cuts, 5000
    .venv/bin/python bench/faults.py --scale 0.1           # a tenth of each, for a quick look
    .venv/bin/python bench/faults.py --only outage --outage 20000

The same scenarios as tests/test_link_faults.py (tests/link_support.py), with larger counts.
Each prints what it did and how long it took; the last line sums them up as
`lost=N duplicates=N gaps=N` (all three 0 is the pass). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from link_support import (  # type: ignore[import-not-found]  # noqa: E402
    broker_kills,
    long_outage,
    network_cuts,
    power_cuts,
)

from conftest import (  # type: ignore[import-not-found]  # noqa: E402
    Mosquitto,
    micropython_binary,
    mosquitto_binary,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker-kills", type=int, default=100)
    parser.add_argument("--network-cuts", type=int, default=100)
    parser.add_argument("--power-cuts", type=int, default=1000)
    parser.add_argument("--outage", type=int, default=5000, help="events journaled while offline")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only", choices=["kills", "cuts", "power", "outage"], action="append", default=None
    )
    args = parser.parse_args()
    binary = mosquitto_binary()
    if binary is None or micropython_binary() is None:
        print("needs mosquitto and the micropython unix port (make setup)")
        return 2
    only = set(args.only or ["kills", "cuts", "power", "outage"])

    def scaled(count: int) -> int:
        return max(1, round(count * args.scale))

    totals = {"lost": 0, "duplicates": 0, "gaps": 0}
    for name in ("kills", "cuts", "power", "outage"):
        if name not in only:
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"kvitto-faults-{name}-"))
        broker = Mosquitto(binary, workdir)
        broker.start()
        started = time.monotonic()
        try:
            if name == "kills":
                count = scaled(args.broker_kills)
                tally = broker_kills(
                    workdir, broker, count, events=max(400, count * 25), seed=args.seed
                )
                what = f"{count} broker kill -9/restarts"
            elif name == "cuts":
                count = scaled(args.network_cuts)
                tally = network_cuts(
                    workdir, broker, count, events=max(400, count * 30), seed=args.seed
                )
                what = f"{count} network cuts (drop / black hole)"
            elif name == "power":
                count = scaled(args.power_cuts)
                tally = power_cuts(
                    workdir, broker, count, events=max(400, count * 20), seed=args.seed
                )
                what = f"{count} board power cuts"
            else:
                count = scaled(args.outage)
                blocks = max(256, count // 5)  # ~160 bytes per event and signature on flash
                tally, in_order = long_outage(workdir, broker, count, blocks=blocks)
                what = f"{count}-event outage ({'in order' if in_order else 'OUT OF ORDER'})"
                if not in_order:
                    totals["gaps"] += 1
        except AssertionError as error:  # a scenario that never completed: say so, go on
            print(f"{name}: FAILED: {str(error)[:2000]}", flush=True)
            totals["gaps"] += 1
            continue
        finally:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - started
        print(
            f"{what}: journaled={tally.journaled} stored={tally.stored} {tally.line()} "
            f"chain_broken={tally.chain_broken} redelivered={tally.redelivered} "
            f"faults_seen={tally.faults_seen} in {seconds:.1f} s "
            f"({tally.journaled / seconds:.0f} events/s end to end)",
            flush=True,
        )
        totals["lost"] += tally.lost
        totals["duplicates"] += tally.duplicates
        totals["gaps"] += tally.gaps + tally.chain_broken
    print(f"lost={totals['lost']} duplicates={totals['duplicates']} gaps={totals['gaps']}")
    return 0 if not any(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
