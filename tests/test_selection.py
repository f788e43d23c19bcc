"""agent.selection: which branch head a host follows (contract: "Branch selection")."""

from __future__ import annotations

import itertools
import random

import pytest

from agent.models import Snapshot
from agent.selection import heads_patterns, parse_version, release_version, select


def sha(n: int) -> str:
    return f"{n:040x}"


def snap(*branches: str) -> Snapshot:
    return Snapshot({b: sha(i + 1) for i, b in enumerate(branches)})


def pick(flag: str, *branches: str) -> str | None:
    target = select(snap(*branches), flag).target
    return target.branch if target else None


# -- exact flag ------------------------------------------------------------------------------


def test_exact_flag_follows_that_branch_only():
    s = snap("main", "dev1", "dev1-2.0", "dev10")
    sel = select(s, "dev1")
    assert sel.target is not None
    assert (sel.target.branch, sel.target.commit) == ("dev1", s.heads["dev1"])
    assert sel.target.version is None
    assert sel.unreadable == ()


def test_exact_flag_without_its_branch_has_no_target():
    assert select(snap("main", "dev10", "dev1-1.0"), "dev1").target is None


# -- NAME* -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("newer", "older"),
    [("1.3.22", "1.3.9"), ("2.0", "1.99.99"), ("1.10", "1.9"), ("10.0.0", "9.9.9")],
)
def test_newest_release_wins_compared_as_numbers(newer, older):
    assert pick("staging1*", f"staging1-{older}", f"staging1-{newer}") == f"staging1-{newer}"
    assert pick("staging1*", f"staging1-{newer}", f"staging1-{older}") == f"staging1-{newer}"


def test_release_target_carries_version_and_commit():
    s = snap("staging1-1.3.9", "staging1-1.3.22")
    target = select(s, "staging1*").target
    assert target is not None
    assert target.version == "1.3.22"
    assert target.version_key == (1, 3, 22)
    assert target.commit == s.heads["staging1-1.3.22"]


@pytest.mark.parametrize("sep", ["-", "/", "_", "."])
def test_every_separator_after_the_name_is_accepted(sep):
    branch = f"staging1{sep}1.3.22"
    assert pick("staging1*", "staging1-1.3.9", branch) == branch


@pytest.mark.parametrize("version", ["1-3-22", "1_3_22", "1.3.22"])
def test_version_separators_compare_as_numbers(version):
    assert pick("staging1*", "staging1-1.3.21", f"staging1-{version}") == f"staging1-{version}"
    assert pick("staging1*", "staging1-1.3.23", f"staging1-{version}") == "staging1-1.3.23"


def test_multi_part_name_with_dashed_version():
    assert pick("prod-asterix*", "prod-asterix-1-3-9", "prod-asterix-1-3-22") == (
        "prod-asterix-1-3-22"
    )


def test_equal_versions_with_different_separators_tie_stably():
    branches = ["staging1-1.3.22", "staging1-1-3-22", "staging1/1.3.22", "staging1_1_3_22"]
    picks = {pick("staging1*", *order) for order in itertools.permutations(branches)}
    assert len(picks) == 1
    assert picks.pop() in branches


def test_shuffled_input_gives_the_same_pick():
    branches = [
        "staging1-1.3.9", "staging1-1.3.22", "staging1-1.10", "staging1-1.9.99",
        "staging1/1.2", "staging10-9.9", "staging1-abc", "staging1", "main",
    ]  # fmt: skip
    for seed in range(30):
        shuffled = branches[:]
        random.Random(seed).shuffle(shuffled)  # noqa: S311 - a test order, not a secret
        assert pick("staging1*", *shuffled) == "staging1-1.10"


def test_longer_name_is_not_a_release_of_the_shorter():
    assert pick("staging1*", "staging10-1.0", "staging1-0.1") == "staging1-0.1"
    sel = select(snap("staging10-1.0", "staging12-3.0"), "staging1*")
    assert sel.target is None
    assert sel.unreadable == ()


@pytest.mark.parametrize(
    "bad", ["staging1-abc", "staging1-1.x", "staging1-1.3-22", "staging1-v1.2"]
)
def test_unreadable_version_is_reported_never_picked(bad):
    sel = select(snap(bad, "staging1-0.1"), "staging1*")
    assert sel.target is not None and sel.target.branch == "staging1-0.1"
    assert sel.unreadable == (bad,)


def test_only_unreadable_versions_means_no_target():
    sel = select(snap("staging1-abc", "staging1-1.x"), "staging1*")
    assert sel.target is None
    assert set(sel.unreadable) == {"staging1-abc", "staging1-1.x"}


def test_bare_name_without_version_is_not_picked():
    sel = select(snap("staging1"), "staging1*")
    assert sel.target is None
    assert pick("staging1*", "staging1", "staging1-0.0.1") == "staging1-0.0.1"


def test_no_matching_branch_means_no_target():
    sel = select(snap("main", "dev1"), "staging1*")
    assert sel.target is None
    assert sel.unreadable == ()
    assert select(Snapshot({}), "staging1*").target is None


# -- helpers -----------------------------------------------------------------------------------


def test_parse_version():
    assert parse_version("1.3.22") == (1, 3, 22)
    assert parse_version("1-3-22") == (1, 3, 22)
    assert parse_version("7") == (7,)
    for bad in ("1.3-22", "1..2", "1.", ".1", "v1", "", "1.x"):
        assert parse_version(bad) is None, bad


def test_release_version_splits_name_and_version():
    assert release_version("staging1-1.3.22", "staging1") == ("1.3.22", True)
    assert release_version("staging10-1.0", "staging1") == (None, False)
    assert release_version("staging1-abc", "staging1") == (None, True)
    assert release_version("main", "staging1") == (None, False)


def test_heads_patterns():
    assert heads_patterns("dev1") == ["refs/heads/dev1"]
    assert heads_patterns("staging1*") == ["refs/heads/staging1*"]


def test_branch_names_that_are_not_utf8_are_never_picked():
    # remote.heads() keeps them out of heads; the cycle reports Snapshot.undecodable itself
    s = Snapshot({"staging1-1.0": sha(1)}, undecodable=("staging1-9.\\xb1",))
    sel = select(s, "staging1*")
    assert sel.target.branch == "staging1-1.0"
    assert sel.unreadable == ()


def test_a_version_of_thousands_of_digits_is_unreadable_not_a_crash():
    # int() refuses more than 4,300 digits; such a branch is reported, never deployed.
    huge = "staging1-1." + "9" * 5000
    picked = select(Snapshot({huge: "a" * 40, "staging1-1.3.10": "b" * 40}), "staging1*")
    assert picked.target.branch == "staging1-1.3.10"
    assert picked.unreadable == (huge,)
