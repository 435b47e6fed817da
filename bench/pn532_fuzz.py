"""Fuzz the PN532 frame and response parsers at scale, and measure the tap-to-feedback path.

    .venv/bin/python bench/pn532_fuzz.py                      # 1,000,000 examples, seed 5
    .venv/bin/python bench/pn532_fuzz.py --examples 200000 --hypothesis 20000
    .venv/bin/python bench/pn532_fuzz.py --latency-taps 200   # unix port: tap read -> LED

Prints figures; exits 1 if any parser raised something other than the driver's own errors.
Inputs: random bytes, valid frames with one byte changed, cut short, or behind garbage.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pn532_support import DEVICE_PRELUDE, firmware_modules  # type: ignore  # noqa: E402

pn532, _, _ = firmware_modules()
from device.drivers import cards, pn532_diag  # type: ignore  # noqa: E402  (on the path firmware_modules() set)

PARSERS = {
    "parse_frame": pn532.parse_frame,
    "target_a": pn532.parse_target_a,
    "check_status": lambda b: pn532.check_status(b, "x"),
    "tg_init": pn532_diag.parse_tg_init,
    "apdu_response": cards.parse_apdu_response,
    "ndef_tlv": cards.parse_ndef_tlv,
    "ndef_uri": cards.parse_ndef_uri,
    "frame_end": lambda b: pn532.frame_end(b, len(b)),
}


def example(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return rng.randbytes(rng.randrange(0, 300))
    body = rng.randbytes(rng.randrange(1, 266))
    frame = bytearray(pn532_diag.build_frame(body))
    if choice < 0.55:
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    elif choice < 0.7:
        del frame[rng.randrange(len(frame)) :]
    elif choice < 0.8:
        frame[0:0] = rng.randbytes(rng.randrange(1, 12))
    elif choice < 0.9:
        # NDEF-shaped: a TLV around a URI record, one byte changed (NTAG and Type 4 reads)
        record = bytes((0xD1, 1, 9, 0x55, 4)) + b"k.invalid"
        frame = bytearray(bytes((3, len(record))) + record + b"\xfe")
        frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.5:
            frame = frame[2:]
    else:
        # response-shaped: D5 + code + data, framed, then maybe one change
        frame = bytearray(
            pn532_diag.build_frame(b"\xd5\x4b" + rng.randbytes(rng.randrange(0, 40)))
        )
        if rng.random() < 0.5:
            frame[rng.randrange(len(frame))] = rng.randrange(256)
    return bytes(frame)


def fuzz(examples: int, seed: int) -> int:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    worst = 0.0
    start = time.perf_counter()
    for _ in range(examples):
        whole = example(rng)
        for name, parse in PARSERS.items():
            # the response parsers see data after TFI/code/status in the driver: shift too
            data = whole if name in ("parse_frame", "frame_end") else whole[rng.randrange(8) :]
            began = time.perf_counter()
            try:
                parse(data)
                outcomes[f"{name}: ok"] += 1
            except pn532.PN532Error as error:
                outcomes[f"{name}: {type(error).__name__}"] += 1
            except Exception as error:  # the bench's whole point: there must be none
                print(f"FOREIGN {type(error).__name__} from {name} on {data.hex()}: {error}")
                return 1
            worst = max(worst, time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    print(f"random fuzz: {examples:,} inputs x {len(PARSERS)} parsers, seed {seed}")
    print(f"  {examples / elapsed:,.0f} inputs/s, slowest single parse {worst * 1e6:.0f} µs")
    for key, count in sorted(outcomes.items()):
        print(f"  {key:32s} {count:>10,}")
    print("  only PN532Error subclasses raised: yes")
    return 0


def hypothesis_fuzz(examples: int) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    seen = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.binary(max_size=300))
    def run(data: bytes) -> None:
        for name, parse in PARSERS.items():
            try:
                parse(data)
            except pn532.PN532Error as error:
                seen[type(error).__name__] += 1
            del name

    start = time.perf_counter()
    run()
    print(f"hypothesis fuzz: {examples:,} examples in {time.perf_counter() - start:.1f} s, ok")
    return 0


LATENCY_SNIPPET = """
import asyncio, json, time
from device.roles.reader import Reader
from device.roles.visits import Visits, Feedback

class Led:
    def show(self, colour):
        if colour != "off":
            self.at = time.ticks_us()

led = Led()
journal = []
visits = Visits(lambda k, c, x: journal.append(k), Feedback(led), debounce_ms=0)
latencies = []
def on_tap(tap):
    visits.tap(tap.cred, tap.kind, tap.extra)
    latencies.append(time.ticks_diff(led.at, tap.read_us))

model, bus, nfc = make("i2c-irq")
reader = Reader(nfc, on_tap, "tag-0042", irq=model.irq, salt=b"s" * 32, interval_ms=1,
                gone_ms=0)
async def main():
    for i in range(TAPS):
        model.place(UidCard(bytes((4, i & 255, i >> 8, 1))))
        await reader.step()
        model.remove()
asyncio.run(main())
latencies.sort()
print(json.dumps({"n": len(latencies), "median": latencies[len(latencies) // 2],
                  "max": latencies[-1]}))
"""


def latency(taps: int) -> int:
    binary = Path(sys.executable).parent / "micropython"
    env = {"MICROPYPATH": f".frozen:{ROOT / 'firmware'}:{ROOT / 'tests' / 'fakes'}"}
    code = DEVICE_PRELUDE + f"\nTAPS = {taps}\n" + LATENCY_SNIPPET
    out = subprocess.run(
        [str(binary), "-X", "heapsize=4M", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if out.returncode:
        print(out.stdout[-2000:], out.stderr[-2000:])
        return 1
    figures = json.loads((out.stdout or "").strip().splitlines()[-1])
    print(
        f"tap read -> journal -> LED (unix port, software path): {figures['n']} taps, "
        f"median {figures['median']} µs, max {figures['max']} µs (budget 20,000 µs)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="PN532 parser fuzz and tap latency")
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--hypothesis", type=int, default=0, help="also run hypothesis, N")
    parser.add_argument("--latency-taps", type=int, default=200)
    args = parser.parse_args()
    status = fuzz(args.examples, args.seed)
    if args.hypothesis:
        status |= hypothesis_fuzz(args.hypothesis)
    if args.latency_taps:
        status |= latency(args.latency_taps)
    return status


if __name__ == "__main__":
    sys.exit(main())
