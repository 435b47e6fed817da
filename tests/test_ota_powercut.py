"""Power cuts at 200 points of a firmware update (issue #22): the device always boots a signed
image, loses no journaled event, and ends on the new firmware, confirmed (tests/ota_support.py;
2,000 cuts in bench/ota_powercut.py)."""

from __future__ import annotations

from ota_support import run_ota_cuts


def test_200_power_cuts_during_an_update_brick_nothing_and_lose_nothing(micropython, tmp_path):
    result = run_ota_cuts(micropython.binary, cuts=200, workdir=tmp_path)
    assert result.problems == []
    assert result.line == "cuts=200 bricked=0 lost=0 unfinished=0"
    assert result.clean_bytes > 40_000  # the image and the journal's writes: cuts span them
