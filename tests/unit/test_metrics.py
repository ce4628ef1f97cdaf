"""Metric label values are names a query can select, never Python reprs."""

from __future__ import annotations

from segstream.runtime.handler import transition_label


def test_transition_labels_name_no_tier_and_flag_states() -> None:
    assert transition_label(None) == "none"
    assert transition_label(True) == "in"
    assert transition_label(False) == "out"
    assert transition_label("champions") == "champions"
