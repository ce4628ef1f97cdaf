"""The fault checker on hand-made change lists: each category found, and only where it is."""

from __future__ import annotations

from typing import Any

from tests.faults.checker import MISSING, check_changes, compare_segments, final_segments


def change(
    customer: str, seq: int, family: str = "value", old: Any = None, new: Any = "a", **kw: Any
) -> dict[str, Any]:
    event_id = kw.pop("event_id", f"{customer}-{seq}")
    return {"customer_id": customer, "seq": seq, "family": family, "from": old, "to": new} | {
        "event_id": event_id
    }


CLEAN = [
    change("C1", 1, "value", None, "new_customers"),
    change("C2", 1, "lifecycle", None, "lead"),
    change("C1", 2, "value", "new_customers", "loyal"),
    change("C1", 3, "vip", False, True),
]


def test_a_clean_stream_has_nothing_to_report() -> None:
    report = check_changes(CLEAN)
    assert (report.changes, report.customers) == (4, 2)
    assert report.lost == {} and report.conflicts == {} and report.chain_breaks == []
    assert report.duplicates == 0 and report.lost_changes == 0


def test_a_hole_in_the_sequence_is_a_lost_change() -> None:
    report = check_changes([c for c in CLEAN if c["seq"] != 2] + [change("C3", 4)])
    assert report.lost == {"C1": [2], "C3": [1, 2, 3]}
    assert report.lost_changes == 4


def test_the_same_change_twice_is_a_duplicate_not_a_conflict() -> None:
    report = check_changes([*CLEAN, CLEAN[0], CLEAN[2]])
    assert report.duplicates == 2
    assert report.conflicts == {} and report.chain_breaks == []


def test_two_ids_for_one_customer_and_seq_is_a_conflict() -> None:
    other = change("C1", 2, "value", "new_customers", "champions", event_id="x")
    report = check_changes([*CLEAN, other])
    assert report.conflicts == {("C1", 2): ["C1-2", "x"]}
    assert report.duplicates == 0
    assert report.chain_breaks == [("C1", "value", 2)]  # from 'new_customers', but it is 'loyal'


def test_a_change_that_does_not_start_where_the_last_one_ended_breaks_the_chain() -> None:
    report = check_changes([CLEAN[0], change("C1", 2, "value", "at_risk", "lost")])
    assert report.chain_breaks == [("C1", "value", 2)]
    assert report.lost == {}


def test_final_segments_are_the_last_change_in_log_order() -> None:
    assert final_segments(CLEAN) == {
        "C1": {"value": "loyal", "vip": True},
        "C2": {"lifecycle": "lead"},
    }


def test_compare_treats_a_family_without_changes_as_its_default() -> None:
    want = {
        "C1": {"value": "loyal", "vip": True, "lifecycle": None},
        "C2": {"value": None, "vip": False, "lifecycle": "lead"},
        "C9": {"value": None, "vip": False, "lifecycle": None},  # never changed anything
    }
    assert compare_segments(final_segments(CLEAN), want, absent_is_default=True).pairs == 0
    strict = compare_segments(final_segments(CLEAN), want)
    assert strict.customers == 3  # without the default rule every unseen family differs


def test_compare_reports_each_differing_pair_with_both_values() -> None:
    want = {"C1": {"value": "champions", "vip": True}, "C2": {"lifecycle": "lead"}}
    got = {"C1": {"value": "loyal", "vip": True}, "C3": {"value": "lost"}, "C2": None}
    diff = compare_segments(got, want)
    assert diff.differ == {
        ("C1", "value"): ("loyal", "champions"),
        ("C2", "lifecycle"): (MISSING, "lead"),
        ("C3", "value"): ("lost", MISSING),
    }
    assert (diff.pairs, diff.customers) == (3, 3)
    assert diff.by_family() == {"lifecycle": 1, "value": 2}
