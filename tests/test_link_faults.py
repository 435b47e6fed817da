"""Fault tests: the real firmware (journal, link, MQTT client, Ed25519 on the unix port) against a
real Mosquitto and the real collector (kvitto.collect.collector on SQLite), fixed seeds.

Pass condition in each: every event the board journaled is stored exactly once, in the end, with
no gap. bench/faults.py runs the same scenarios with larger counts.
"""

from __future__ import annotations

import pytest
from link_support import broker_kills, long_outage, network_cuts, power_cuts

pytestmark = pytest.mark.slow


def assert_complete(tally) -> None:
    assert (tally.lost, tally.duplicates, tally.gaps) == (0, 0, 0), tally
    assert tally.stored == tally.journaled > 0
    assert tally.chain_broken == 0, tally


def test_twenty_broker_kills_during_a_stream(micropython, mosquitto, tmp_path):
    tally = broker_kills(tmp_path, mosquitto, kills=20, events=400)
    assert_complete(tally)
    assert tally.faults_seen > 10  # connections: the kills really hit the stream


def test_twenty_network_cuts_resets_and_black_holes(micropython, mosquitto, tmp_path):
    tally = network_cuts(tmp_path, mosquitto, cuts=20, events=400)
    assert_complete(tally)
    assert tally.faults_seen > 10


def test_twenty_board_power_cuts(micropython, mosquitto, tmp_path):
    tally = power_cuts(tmp_path, mosquitto, cuts=20, events=400)
    assert_complete(tally)
    assert tally.faults_seen == 21  # boots: 20 cuts, 20 restarts on the same flash


def test_two_thousand_events_after_a_long_outage_arrive_in_order(micropython, mosquitto, tmp_path):
    tally, in_order = long_outage(tmp_path, mosquitto, events=2000)
    assert_complete(tally)
    assert tally.journaled == 2000
    assert in_order
