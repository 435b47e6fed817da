"""Issue #25.3: a malformed profile value is one line naming the file and key, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from verify_support import standard

from kvitto.verify.rules import ProfileError, available_profiles, load_profile

HEAD = 'name = "prov"\nmunicipality = "Prov"\nsource = "000_f7498ea13147d56b.txt"\n'
ACTIVITY = '[activity.226]\nname = "Omsorg"\ncategory = "hemtjanst"\nwhere = "tag"\n'


@pytest.mark.parametrize(
    ("body", "key", "found"),
    [
        ("activity = 5\n", "key activity:", "integer 5"),
        ("[activity]\nomsorg = 'x'\n", "key activity.omsorg:", "string 'x'"),
        (ACTIVITY + "[rules.E1]\ntolerance_minutes = 'two'\n", "key rules.E1.tolerance_minutes:",
         "string 'two'"),
        (ACTIVITY + '[rules.D4]\nat = "25:99"\n', "key rules.D4.at:", "string '25:99'"),
        (ACTIVITY + '[rules.D1]\ndays = "two"\n', "key rules.D1.days:", "string 'two'"),
        ("rules = [1, 2]\n", "key rules:", "array [1, 2]"),
        (ACTIVITY + "[rules.T1]\noutcome = 'maybe'\n", "key rules.T1.outcome:", "'maybe'"),
        (ACTIVITY + "[rules.E1]\ntolerance = 2\n", "key rules.E1.tolerance:", "not a known key"),
        (ACTIVITY + "[[not_checked]]\nrule = 'X1'\nsource = '000'\n", "not_checked[0].reason",
         "missing"),
        (ACTIVITY + "[rules.X1]\nmonth_days = 0\n", "key rules.X1.month_days:",
         "expected a number from 1 to 31"),
        (ACTIVITY + "[rules.C2]\nactivities = ['tillsynx']\n", "key rules.C2.activities:",
         "['tillsynx']"),
        (ACTIVITY + "[rules.D3]\nfields = ['registred_at']\n", "key rules.D3.fields:",
         "expected names among registered_at"),
        # issue #23: a lock's settings in the profile
        ("[lock]\nfallback = 'sometimes'\n", "key lock.fallback:", "string 'sometimes'"),
        ("[lock]\ntolerance_min = 500\n", "key lock.tolerance_min:",
         "expected a whole number from 0 to 120, found integer 500"),
        ("[lock]\ndoor_open_s = '300'\n", "key lock.door_open_s:", "string '300'"),
        ("[lock]\ndoor_open_s = 5\n", "key lock.door_open_s:", "from 10 to 86400"),
        ("[lock]\ntolerance = 15\n", "key lock.tolerance:", "not a known key"),
    ],
)  # fmt: skip
def test_malformed_profile_value_exits_2_naming_file_and_key(tmp_path, body, key, found):
    profile = tmp_path / "prov.toml"
    profile.write_text(HEAD + body, encoding="utf-8")
    case = standard(tmp_path / "case").write()
    run = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", str(profile),
         "--month", "2026-10"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(profile) in lines[0] and key in lines[0] and found in lines[0], lines[0]


def test_a_profile_that_is_not_utf8_exits_2(tmp_path):
    profile = tmp_path / "prov.toml"
    profile.write_bytes(HEAD.encode() + b"# Norrt\xe4lje in Latin-1\n")
    case = standard(tmp_path / "case").write()
    run = subprocess.run(
        [sys.executable, "-m", "kvitto", "verify", str(case), "--profile", str(profile),
         "--month", "2026-10"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert str(profile) in run.stderr and "not UTF-8" in run.stderr and "byte" in run.stderr


@pytest.mark.parametrize("name", available_profiles())
def test_the_shipped_profiles_fit_the_schema(name):
    assert load_profile(name).rules


def test_a_boolean_is_not_a_number(tmp_path):
    profile = tmp_path / "prov.toml"
    profile.write_text(HEAD + ACTIVITY + "[rules.D1]\ndays = true\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"key rules\.D1\.days: expected a whole number"):
        load_profile(str(profile))
